"""syncd: turns Debezium change events of ERP tables into issued e-invoices, exactly once."""

__version__ = "0.1.0"
