"""The ERP side of the database: reading a document's lines (`lines`, with the live schema
check of `check-config --live`) and writing results back into ERP rows (`writeback`).

Write-back must be idempotent (re-applying a result changes nothing) and must never look
like a qualifying change when Debezium captures it.
"""
