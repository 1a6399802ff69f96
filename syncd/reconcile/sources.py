"""Read the three sides of a reconciliation: the ERP and the ledger in one snapshot, then
the platform's list.

Invariants:
* The ERP and the ledger are read in ONE repeatable-read, read-only transaction, so a
  document the daemon moves meanwhile is seen consistently on both sides (the ledger row
  and the ERP write-back are committed together). Nothing is ever written to the ERP.
* An ERP row "qualifies" when the DBAs' own `qualifies` condition holds for the row as
  it is now, read the way the daemon reads a snapshot row (`becomes: X` holds when the
  column is X); it is "cancelled" when `reverses` holds so. The condition language is
  the config's, evaluated by `syncd.rules.conditions`; there is no SQL of anyone's.
* The platform is listed AFTER the snapshot: everything the snapshot holds as ISSUED is
  then already in the list, and the serials of invoices the snapshot did not yet know
  are looked up again in the ledger afterwards (`known_invoices`), so an invoice issued
  while reconcile runs is not reported as one issued by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.config import DocumentConfig
from syncd.erp.documents import rows_by_key, rows_in_period
from syncd.identity import DocumentKind, IdentityError, read_key, source_key_of
from syncd.ledger import reconcile as ledger_reconcile
from syncd.lifecycle import DocumentState
from syncd.reconcile.compare import (
    Amounts,
    ErpDocument,
    Inputs,
    LedgerDocument,
    PlatformEntry,
)
from syncd.rules.conditions import Check, compile_condition

#: Lists the platform's invoices issued from the first instant until now.
PlatformList = Callable[[datetime], Sequence[PlatformEntry]]

_POSITION = RecordPosition("reconcile", 0, 0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the snapshot transaction read."""

    erp: list[ErpDocument]
    ledger: list[LedgerDocument]


class _Reader:
    """One document type's rows, turned into what `compare` judges."""

    def __init__(self, doc: DocumentConfig) -> None:
        self.doc = doc
        self.qualifies: Check = compile_condition(doc.qualifies)
        self.reverses: Check | None = (
            None if doc.reverses is None else compile_condition(doc.reverses)
        )
        self.invoice_no = doc.write_back.columns.invoice_no
        cols = set(doc.key_columns) | doc.qualifies.columns()
        if doc.reverses is not None:
            cols |= doc.reverses.columns()
        if doc.writes_back_to_source:
            cols.add(self.invoice_no)
        self.columns = sorted(cols)

    def erp_document(self, row: Mapping[Any, Any]) -> ErpDocument | None:
        try:
            key = source_key_of(read_key(row, None, self.doc.key_columns, self.doc.table))
        except IdentityError:
            return None
        event = ChangeEvent(
            position=_POSITION,
            op=Op.READ,
            table=self.doc.table,
            key=None,
            before=None,
            after=row,
            source_ts_ms=None,
            snapshot=True,
        )
        number = row.get(self.invoice_no) if self.doc.writes_back_to_source else None
        return ErpDocument(
            document_type=self.doc.name,
            key=key,
            qualifies=self.qualifies(event).is_true,
            cancelled=self.reverses is not None and self.reverses(event).is_true,
            invoice_no=None if number is None else str(number),
        )


def _amounts(totals: object) -> Amounts | None:
    if not isinstance(totals, Mapping):
        return None
    try:
        return Amounts(
            Decimal(str(totals["net_amount"])),
            Decimal(str(totals["tax_amount"])),
            Decimal(str(totals["gross_amount"])),
        )
    except (KeyError, InvalidOperation):
        return None


def ledger_document(m: Mapping[Any, Any]) -> LedgerDocument:
    return LedgerDocument(
        id=int(m["id"]),
        document_type=m["document_type"],
        source_table=m["source_table"],
        key=m["source_key"],
        kind=DocumentKind(m["kind"]),
        revision=int(m["revision"]),
        state=DocumentState(m["state"]),
        serial=m["serial"],
        invoice_no=m["invoice_no"],
        issued_at=m["issued_at"],
        amounts=_amounts(m["totals"]),
        reverses_id=m["reverses_id"],
    )


def _side_table_numbers(
    conn: Connection, doc: DocumentConfig, keys: Sequence[Sequence[Any]]
) -> dict[str, str | None]:
    """Invoice numbers written back to a side table, by the document's key text."""
    wb_keys = doc.write_back_keys
    column = doc.write_back.columns.invoice_no
    out: dict[str, str | None] = {}
    for row in rows_by_key(conn, doc.write_back_table, [column], wb_keys, keys):
        ident = tuple(zip(doc.key_columns, (row[c] for c in wb_keys), strict=True))
        value = row[column]
        out[source_key_of(ident)] = None if value is None else str(value)
    return out


def read_snapshot(
    conn: Connection,
    docs: Iterable[DocumentConfig],
    start: datetime,
    end: datetime,
    period_columns: Mapping[str, str | None],
) -> Snapshot:
    """The ERP rows and ledger rows in scope for the period (see `compare.Inputs`)."""
    docs = list(docs)
    erp: dict[tuple[str, str], ErpDocument] = {}
    ledger: dict[int, LedgerDocument] = {}
    for m in ledger_reconcile.documents_created_in(conn, [d.name for d in docs], start, end):
        row = ledger_document(m)
        ledger[row.id] = row
    for doc in docs:
        reader = _Reader(doc)
        raw: list[Mapping[Any, Any]] = list(
            rows_in_period(
                conn, doc.table, reader.columns, period_columns.get(doc.name), start, end
            )
        )
        documents = [e for e in (reader.erp_document(r) for r in raw) if e is not None]
        seen = {e.key for e in documents}
        # rows of documents the ledger created in the period, dated outside it
        wanted = {
            r.key
            for r in ledger.values()
            if r.document_type == doc.name and r.source_table == doc.table and r.key not in seen
        }
        if wanted:
            key_values = [[json.loads(k)[c] for c in doc.key_columns] for k in sorted(wanted)]
            more = list(rows_by_key(conn, doc.table, reader.columns, doc.key_columns, key_values))
            raw += more
            documents += [e for e in (reader.erp_document(r) for r in more) if e is not None]
        if not doc.writes_back_to_source and documents:
            keys = [[r[c] for c in doc.key_columns] for r in raw]
            numbers = _side_table_numbers(conn, doc, keys)
            documents = [
                ErpDocument(e.document_type, e.key, e.qualifies, e.cancelled, numbers.get(e.key))
                for e in documents
            ]
        for e in documents:
            erp[(e.document_type, e.key)] = e
        keys_in_erp = sorted({e.key for e in documents})
        for m in ledger_reconcile.documents_with_keys(
            conn, doc.name, doc.table, keys_in_erp, outside=(start, end)
        ):
            row = ledger_document(m)
            ledger[row.id] = row
    return Snapshot(list(erp.values()), list(ledger.values()))


def inputs(
    snapshot: Snapshot,
    platform: Sequence[PlatformEntry] | None,
    known: tuple[frozenset[str], frozenset[str]],
    docs: Iterable[DocumentConfig],
    start: datetime,
    end: datetime,
) -> Inputs:
    return Inputs(
        period_start=start,
        period_end=end,
        erp=snapshot.erp,
        ledger=snapshot.ledger,
        platform=list(platform or ()),
        known_serials=known[0],
        known_invoice_nos=known[1],
        document_tables={d.name: d.table for d in docs},
        platform_listed=platform is not None,
    )


__all__ = ["PlatformList", "Snapshot", "inputs", "ledger_document", "read_snapshot"]
