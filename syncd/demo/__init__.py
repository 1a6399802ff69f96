"""The demo load generator (`syncd demo`): orders into the demo ERP schema, and the
summary read back from the ERP and the sandbox. Not part of the daemon's path."""
