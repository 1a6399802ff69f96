"""The invoice: its model (`model`), tax maths (`taxmath`), the platforms' business rules
(`validation`), the EN 16931 / UBL rendering (`ubl`) and the mapping from an ERP row and its
lines (`from_erp`). Pure: no I/O, money always Decimal.
"""
