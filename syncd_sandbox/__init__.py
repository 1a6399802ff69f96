"""A realistic e-invoice platform to develop and referee syncd against.

Asynchronous, signed, idempotent by serial, strict about tax rules, durable
(SQLite) and able to misbehave on demand. See docs/sandbox.md.
"""
