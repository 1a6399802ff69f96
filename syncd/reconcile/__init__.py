"""`syncd reconcile`: the ERP, the ledger and the platform's own list, compared.

`compare` is the pure judgement (what is an exception, of which class); `sources` reads
the three sides in one repeatable-read snapshot of the ERP database; `report` renders
the result as a table, CSV or JSON.
"""
