"""The ledger's invoices of a period, streamed for `syncd export`.

Invariant: memory does not grow with the number of invoices. Rows come from one
server-side cursor (`yield_per`) in the caller's transaction (REPEATABLE READ, read
only: one consistent snapshot while the daemon runs), and each is handed on before the
next batch is fetched. Without the full payload (CSV, JSON) only the few fields a row
needs are read out of the JSONB server-side, so a row costs a few hundred bytes however
long the invoice is.

An invoice is a ledger document the platform gave a number (`invoice_no` set) with its
`issued_at` in the period: a blue invoice (issue row, ISSUED or later REVERSED) or a red
one (reversal row). Amounts are the stored invoice's, as `Decimal` (a red invoice's are
negative, as issued); a row whose payload was pruned (`retention`) has no buyer or
amounts and says so (`payload_pruned`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from sqlalchemy import Connection, and_, select

from syncd.identity import DocumentKind
from syncd.invoice.export import InvoiceRecord
from syncd.ledger.schema import documents

__all__ = ["invoices"]

#: Rows fetched per round trip of the server-side cursor.
BATCH: Final = 2000


def _decimal(text: object) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def invoices(
    conn: Connection,
    start: datetime,
    end: datetime,
    *,
    with_payload: bool = False,
    batch: int = BATCH,
) -> Iterator[InvoiceRecord]:
    """The invoices issued in [start, end), oldest first (ties by ledger id)."""
    d = documents.alias("d")
    o = documents.alias("o")
    payload = d.c.payload
    columns: list[Any] = [
        d.c.id,
        d.c.document_type,
        d.c.source_key,
        d.c.revision,
        d.c.serial,
        d.c.invoice_no,
        d.c.kind,
        d.c.state,
        d.c.issued_at,
        o.c.invoice_no.label("original_no"),
        payload["original_invoice_no"].astext.label("payload_original_no"),
        payload["buyer"]["name"].astext.label("buyer_name"),
        payload["buyer"]["tax_id"].astext.label("buyer_tax_id"),
        payload["currency"].astext.label("currency"),
        payload["totals"]["net_amount"].astext.label("net_amount"),
        payload["totals"]["tax_amount"].astext.label("tax_amount"),
        payload["totals"]["gross_amount"].astext.label("gross_amount"),
    ]
    if with_payload:
        columns.append(payload.label("payload"))
    query = (
        select(*columns)
        .select_from(d.outerjoin(o, and_(o.c.id == d.c.reverses_id)))
        .where(
            d.c.invoice_no.is_not(None),
            d.c.issued_at >= start,
            d.c.issued_at < end,
        )
        .order_by(d.c.issued_at, d.c.id)
        .execution_options(yield_per=batch)
    )
    for m in conn.execute(query).mappings():
        red = m["kind"] == DocumentKind.REVERSAL.value
        has_payload = m["net_amount"] is not None
        yield InvoiceRecord(
            id=m["id"],
            document_type=m["document_type"],
            document_key=m["source_key"],
            revision=m["revision"],
            serial=m["serial"],
            invoice_no=m["invoice_no"],
            kind="RED" if red else "BLUE",
            original_invoice_no=(m["original_no"] or m["payload_original_no"]) if red else None,
            buyer_name=m["buyer_name"],
            buyer_tax_id=m["buyer_tax_id"],
            currency=(m["currency"] or "CNY") if has_payload else None,
            net_amount=_decimal(m["net_amount"]),
            tax_amount=_decimal(m["tax_amount"]),
            gross_amount=_decimal(m["gross_amount"]),
            issued_at=m["issued_at"],
            state=m["state"],
            payload=m["payload"] if with_payload else None,
        )
