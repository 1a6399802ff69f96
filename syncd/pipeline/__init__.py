"""The joint: the only package that wires the edges (Kafka, the ERP database, the
ledger, the provider) together. The path of one record through it, module by module, is in
docs/architecture.md; `poison.failure_of` is the one place that tells a poison record from
an outage.
"""
