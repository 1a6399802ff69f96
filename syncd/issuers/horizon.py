"""After the query horizon: finding a document's invoice in the platform's own list.

Real platforms forget request results after a while (hours to days): past that horizon a
query by serial answers "not found" whether or not the invoice exists, so "not found" no
longer proves that the serial may be sent again -- a re-send could issue a second
invoice. What this module protects:

* **Adopt only on an exact, unique match.** The platform's list (`InvoiceLister`) is
  searched by seller, buyer, gross total and the dates since the document was frozen; a
  listed invoice matches only if it is a blue, standing invoice with the same buyer, the
  same net, tax and gross amounts (and type and buyer name when both sides say), whose
  serial is ours or unknown, and which no other ledger document holds. A listed invoice
  under our own serial wins outright. One match is adopted; none or several park the
  document for a person, with the evidence.
* **Pure.** `search_for`, `judge` and `adopted` do no I/O: the caller lists and looks up
  the ledger, so every rule is unit-tested with plain values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from syncd.issuers.base import InvoiceListQuery, Issued, NeedsHuman, PlatformInvoice, Reason

#: The platforms' calendar (Chinese platforms date invoices in Beijing time).
PLATFORM_TZ: Final = timezone(timedelta(hours=8))
#: `last_error_code` of a document parked after the horizon.
NO_MATCH: Final = "HORIZON_NO_MATCH"
AMBIGUOUS: Final = "HORIZON_AMBIGUOUS"
NO_LIST: Final = "HORIZON_NO_LIST"
#: How many listed invoices the evidence names (the rest are counted).
EVIDENCE_LIMIT: Final = 10

Verdict = Literal["ADOPTED", "NO_MATCH", "AMBIGUOUS"]


def passed(created_at: datetime, now: datetime, horizon: float | None) -> bool:
    """True when the platform may have forgotten a serial frozen at `created_at`.

    Measured from the row's creation, which is never later than any send of its serial,
    so the horizon counts as passed no later than the platform forgets (conservative:
    a document may be searched for although its serial is still remembered, never
    re-sent although it was forgotten)."""
    return horizon is not None and (now - created_at).total_seconds() >= horizon


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the frozen invoice says the platform's invoice must be."""

    query: InvoiceListQuery
    net: Decimal
    tax: Decimal
    buyer_name: str | None
    invoice_type: str | None

    def describe(self) -> dict[str, Any]:
        q = self.query
        return {
            "seller_tax_id": q.seller_tax_id,
            "buyer_tax_id": q.buyer_tax_id,
            "buyer_name": self.buyer_name,
            "issued_from": q.issued_from.isoformat(),
            "issued_to": q.issued_to.isoformat(),
            "net_amount": str(self.net),
            "tax_amount": str(self.tax),
            "gross_amount": str(q.gross_amount),
            "invoice_type": self.invoice_type,
        }


def search_for(payload: Mapping[str, Any], created_at: datetime, now: datetime) -> Wanted:
    """The search for a frozen blue invoice: its seller, buyer and totals, issued between
    the day the document was frozen (or its `issue_date`, if earlier) and today.

    Raises `ValueError` for a payload without seller or totals (not a frozen invoice)."""
    seller = payload.get("seller") or {}
    buyer = payload.get("buyer") or {}
    totals = payload.get("totals") or {}
    seller_tax_id = seller.get("tax_id")
    if not isinstance(seller_tax_id, str) or not seller_tax_id:
        raise ValueError("the frozen invoice has no seller tax ID")
    try:
        net, tax, gross = (
            Decimal(str(totals[k])) for k in ("net_amount", "tax_amount", "gross_amount")
        )
    except (KeyError, InvalidOperation) as exc:
        raise ValueError(f"the frozen invoice has no readable totals: {exc}") from None
    first = created_at.astimezone(PLATFORM_TZ).date()
    issue_date = payload.get("issue_date")
    if isinstance(issue_date, str):
        with contextlib.suppress(ValueError):  # a bad date: the frozen day alone
            first = min(first, date.fromisoformat(issue_date))
    last = max(first, now.astimezone(PLATFORM_TZ).date())
    buyer_tax_id = buyer.get("tax_id")
    return Wanted(
        InvoiceListQuery(
            seller_tax_id,
            first,
            last,
            buyer_tax_id if isinstance(buyer_tax_id, str) and buyer_tax_id else None,
            gross,
        ),
        net,
        tax,
        buyer.get("name") if isinstance(buyer.get("name"), str) else None,
        payload.get("invoice_type") if isinstance(payload.get("invoice_type"), str) else None,
    )


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    #: the invoice to adopt (`verdict` ADOPTED)
    invoice: PlatformInvoice | None
    #: what was searched and what was found, each listed invoice with why it does or does
    #: not match (kept in the ledger's audit trail)
    evidence: dict[str, Any]


def mismatch(
    wanted: Wanted, serial: str, invoice: PlatformInvoice, held_by: str | None
) -> str | None:
    """Why `invoice` is not the document's invoice (None: it matches)."""
    q = wanted.query
    checks: list[tuple[bool, str]] = [
        (invoice.kind == "BLUE", "a red invoice"),
        (invoice.state == "ISSUED", f"{invoice.state.lower()} at the platform"),
        (invoice.serial in (None, serial), f"issued under serial {invoice.serial}"),
        (held_by in (None, serial), f"already held by ledger document {held_by}"),
        (invoice.seller_tax_id in (None, q.seller_tax_id), "another seller"),
        (invoice.buyer_tax_id == q.buyer_tax_id, "another buyer tax ID"),
        (
            wanted.buyer_name is None
            or invoice.buyer_name is None
            or invoice.buyer_name == wanted.buyer_name,
            "another buyer name",
        ),
        (
            (invoice.totals.net_amount, invoice.totals.tax_amount, invoice.totals.gross_amount)
            == (wanted.net, wanted.tax, q.gross_amount),
            "other amounts",
        ),
        (
            wanted.invoice_type is None
            or invoice.invoice_type is None
            or invoice.invoice_type == wanted.invoice_type,
            "another invoice type",
        ),
        (q.issued_from <= invoice.issued_at.astimezone(PLATFORM_TZ).date(), "issued before"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    return None


def judge(
    wanted: Wanted,
    serial: str,
    listed: Sequence[PlatformInvoice],
    held: Mapping[str, str],
) -> Judgement:
    """The verdict on what the list returned. `held`: invoice number -> serial of the
    ledger document that already holds it (for the listed numbers)."""
    found: list[dict[str, Any]] = []
    matches: list[PlatformInvoice] = []
    for invoice in listed:
        why = mismatch(wanted, serial, invoice, held.get(invoice.invoice_no))
        if why is None:
            matches.append(invoice)
        found.append(_described(invoice, why))
    ours = [m for m in matches if m.serial == serial]
    chosen = ours if len(ours) == 1 else matches
    verdict: Verdict = (
        "ADOPTED" if len(chosen) == 1 else ("NO_MATCH" if not chosen else "AMBIGUOUS")
    )
    evidence = {
        "serial": serial,
        "searched": wanted.describe(),
        "found": found[:EVIDENCE_LIMIT],
        "found_count": len(found),
        "matches": [m.invoice_no for m in chosen],
        "verdict": verdict,
    }
    return Judgement(verdict, chosen[0] if verdict == "ADOPTED" else None, evidence)


def adopted(serial: str, invoice: PlatformInvoice) -> Issued:
    """The adopted invoice as the issue result a query would have given."""
    return Issued(
        serial=serial,
        invoice_no=invoice.invoice_no,
        issued_at=invoice.issued_at.isoformat(),
        check_code=None,
        kind="BLUE",
        totals=invoice.totals,
    )


def parked(serial: str, judgement: Judgement) -> NeedsHuman:
    """The needs-human result of a search without a unique match, its reason one line of
    evidence (the full evidence goes to the audit trail)."""
    code = NO_MATCH if judgement.verdict == "NO_MATCH" else AMBIGUOUS
    return NeedsHuman(serial, Reason(code, summary(judgement.evidence)))


def summary(evidence: Mapping[str, Any]) -> str:
    """One line: what was searched, what was found, why nothing was adopted."""
    s = evidence["searched"]
    searched = (
        f"seller {s['seller_tax_id']}, buyer {s['buyer_tax_id'] or '-'}, gross "
        f"{s['gross_amount']} (net {s['net_amount']}, tax {s['tax_amount']}), issued "
        f"{s['issued_from']}..{s['issued_to']}"
    )
    found = evidence["found"]
    if not found:
        outcome = "found no invoice"
    else:
        parts = [
            f"{f['invoice_no']} ({f['mismatch'] or 'matches'})" for f in found[:EVIDENCE_LIMIT]
        ]
        more = evidence["found_count"] - len(parts)
        outcome = f"found {evidence['found_count']}: " + ", ".join(parts)
        if more > 0:
            outcome += f" and {more} more"
    verdict = (
        "several invoices match; adopt one by hand"
        if evidence["verdict"] == "AMBIGUOUS"
        else "no invoice matches exactly"
    )
    return (
        f"the platform no longer answers for serial {evidence['serial']} (query horizon); "
        f"searched its invoice list for {searched}: {outcome}; {verdict}, nothing re-sent"
    )


def _described(invoice: PlatformInvoice, why: str | None) -> dict[str, Any]:
    return {
        "invoice_no": invoice.invoice_no,
        "serial": invoice.serial,
        "kind": invoice.kind,
        "state": invoice.state,
        "issued_at": invoice.issued_at.isoformat(),
        "buyer_tax_id": invoice.buyer_tax_id,
        "buyer_name": invoice.buyer_name,
        "net_amount": str(invoice.totals.net_amount),
        "tax_amount": str(invoice.totals.tax_amount),
        "gross_amount": str(invoice.totals.gross_amount),
        "mismatch": why,
    }


__all__ = [
    "AMBIGUOUS",
    "NO_LIST",
    "NO_MATCH",
    "Judgement",
    "Wanted",
    "adopted",
    "judge",
    "mismatch",
    "parked",
    "passed",
    "search_for",
    "summary",
]
