"""What every e-invoice provider client promises syncd (docs/issuers.md).

A provider client turns each call into exactly one of a small set of typed
results. The pipeline's state machine switches on these and nothing else, so a
second provider is one new module that maps *its* API onto the same results.

The one rule that keeps invoices exactly-once: a result other than `Issued`
or `Rejected` never means "the invoice does not exist". Only a query that
answers `NotFound` (or a `Retryable` with `resubmit=True`) says the serial
may be sent again -- and even then with the *same* serial, never a new one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, runtime_checkable

from syncd.errors import SyncdError
from syncd.lifecycle import ProviderOutcome

ReversalReason: TypeAlias = Literal[
    "SALES_RETURN", "INVOICING_ERROR", "SERVICE_STOPPED", "ALLOWANCE"
]


@dataclass(frozen=True, slots=True)
class Reason:
    """A provider's reason, with its own stable code (kept verbatim for the ERP row)."""

    code: str
    message: str
    path: str | None = None

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.code}{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Totals:
    net_amount: Decimal
    tax_amount: Decimal
    gross_amount: Decimal


@dataclass(frozen=True, slots=True)
class Issued:
    """The provider issued the document (blue invoice, or red one for a reversal)."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.ISSUED
    serial: str
    invoice_no: str
    issued_at: str
    check_code: str | None
    kind: Literal["BLUE", "RED"]
    totals: Totals | None
    original_invoice_no: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Processing:
    """Accepted, not finished: query the same serial again later.

    `status` is the provider's word (`PROCESSING`, `PENDING_CONFIRMATION`);
    `awaiting_confirmation` means a person (the buyer) must act first.
    """

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.PROCESSING
    serial: str
    status: str = "PROCESSING"
    awaiting_confirmation: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """The provider will not issue this document as it stands: a data or rule error."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.REJECTED
    serial: str
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Retryable:
    """Nothing happened (or nothing could be learned); try again after a while.

    `resubmit` False: repeat the same call. True: the provider confirmed there is
    no live document for this serial -- send the issue/reverse request again with
    the same serial. `retry_after` is the provider's own hint in seconds.
    `throttled`: the provider metered us (HTTP 429); nothing is wrong with this
    document, so the answer does not use up its attempts.
    """

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.RETRYABLE
    serial: str
    reason: Reason
    retry_after: float | None = None
    resubmit: bool = False
    throttled: bool = False


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """The request may have taken effect (timeout or reset after sending): query the serial."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.OUTCOME_UNKNOWN
    serial: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class NeedsHuman:
    """The provider account cannot proceed until a person acts (session, credit, config)."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.NEEDS_HUMAN
    serial: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The provider refuses a repeated serial: the document exists, query it to learn how."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.DUPLICATE
    serial: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class NotFound:
    """A query: the provider holds nothing under this serial."""

    outcome: ClassVar[ProviderOutcome] = ProviderOutcome.NOT_FOUND
    serial: str


IssueResult: TypeAlias = (
    Issued | Processing | Rejected | Retryable | OutcomeUnknown | NeedsHuman | Duplicate | NotFound
)

InvoicePayload: TypeAlias = Mapping[str, Any] | bytes
"""The canonical invoice JSON (docs/invoice-format.md), as a mapping or as the exact
frozen bytes from the ledger (sent unchanged, so the payload hash stays meaningful)."""


@dataclass(frozen=True, slots=True)
class ReturnedLine:
    """Part of a line of the blue invoice to reverse: its line number and the units."""

    line_no: int
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """Reverse a blue invoice; `serial` is the reversal's own idempotency key.

    `lines` empty: the whole invoice. Otherwise a partial red invoice for just those
    units of those lines (returns); the platform checks that the red invoices of a line
    never exceed it."""

    serial: str
    original_invoice_no: str
    reason: ReversalReason
    #: the frozen red invoice (canonical JSON) when the caller has it: providers whose
    #: reversal form names the buyer and seller (Nuonuo's red-confirmation form) read it
    invoice: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    lines: tuple[ReturnedLine, ...] = ()


@runtime_checkable
class Issuer(Protocol):
    """One e-invoice provider. Implementations are thread-safe and never raise for
    provider or network trouble: every outcome is a result value."""

    provider: str

    def issue(self, invoice: InvoicePayload) -> IssueResult: ...

    def query(self, serial: str) -> IssueResult: ...

    def reverse(self, request: ReversalRequest) -> IssueResult: ...

    def query_reversal(self, serial: str) -> IssueResult: ...

    def close(self) -> None: ...


class AsyncIssuer(Protocol):
    """An `Issuer` on an event loop: the same four calls, the same results, never raising
    for provider or network trouble. Used from one loop only."""

    provider: str

    async def issue(self, invoice: InvoicePayload) -> IssueResult: ...

    async def query(self, serial: str) -> IssueResult: ...

    async def reverse(self, request: ReversalRequest) -> IssueResult: ...

    async def query_reversal(self, serial: str) -> IssueResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class HasAsyncClient(Protocol):
    """A provider whose calls can also run on an event loop (`Issuer.aio`): a provider
    without one keeps its calls on worker threads."""

    def aio(self) -> AsyncIssuer: ...


# --- the platform's own list of invoices ------------------------------------------------

PlatformState: TypeAlias = Literal["ISSUED", "REVERSED", "VOIDED"]


@dataclass(frozen=True, slots=True)
class InvoiceListQuery:
    """Which invoices to list: one seller, the issue dates `issued_from`..`issued_to`
    (both inclusive, the platform's calendar: Beijing time for Chinese platforms), and
    optionally one buyer and one gross total (exact, `Decimal`)."""

    seller_tax_id: str
    issued_from: date
    issued_to: date
    buyer_tax_id: str | None = None
    gross_amount: Decimal | None = None

    def __post_init__(self) -> None:
        if self.issued_to < self.issued_from:
            raise ValueError("issued_to is before issued_from")

    def windows(self, days: int) -> list[InvoiceListQuery]:
        """The same query cut into consecutive ranges of at most `days` days, for
        platforms that bound one list call's range."""
        out: list[InvoiceListQuery] = []
        start = self.issued_from
        while start <= self.issued_to:
            end = min(start + timedelta(days=days - 1), self.issued_to)
            out.append(dataclasses.replace(self, issued_from=start, issued_to=end))
            start = end + timedelta(days=1)
        return out

    def matches(self, invoice: PlatformInvoice) -> bool:
        """The filter, for providers whose list cannot apply all of it (and for tests)."""
        day = invoice.issued_at.date()
        return (
            self.issued_from <= day <= self.issued_to
            and (invoice.seller_tax_id in (None, self.seller_tax_id))
            and (self.buyer_tax_id is None or invoice.buyer_tax_id == self.buyer_tax_id)
            and (self.gross_amount is None or invoice.totals.gross_amount == self.gross_amount)
        )


@dataclass(frozen=True, slots=True)
class PlatformInvoice:
    """One invoice as the platform lists it -- including invoices syncd never asked for
    (issued by hand in the platform's portal: `serial` None).

    `serial` is syncd's serial (the provider's order number / request id) when the
    platform still knows it; `state` is the platform's word on the invoice now: `ISSUED`,
    `REVERSED` (a red invoice cancels it in full; `red_invoice_no` names it when known)
    or `VOIDED`. Amounts are the platform's, negative on a red invoice."""

    invoice_no: str
    kind: Literal["BLUE", "RED"]
    issued_at: datetime
    totals: Totals
    state: PlatformState = "ISSUED"
    serial: str | None = None
    original_invoice_no: str | None = None
    red_invoice_no: str | None = None
    seller_tax_id: str | None = None
    buyer_tax_id: str | None = None
    buyer_name: str | None = None
    invoice_type: Literal["SPECIAL", "ORDINARY"] | None = None


class ListingError(SyncdError):
    """The platform's invoice list could not be read (completely): a page failed.

    Raised by `list_invoices` -- a partial list must never pass for the whole one, since
    a missing invoice is exactly what reconciliation and the horizon search look for.
    `retryable` False: a person must act (credentials, account); True: try again later."""

    def __init__(self, reason: Reason, *, retryable: bool) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.retryable = retryable


@runtime_checkable
class InvoiceLister(Protocol):
    """A provider that can list the invoices it issued (docs/issuers.md, "Listing").

    `list_invoices` pages through the platform's results lazily and yields every
    invoice matching the query, each once; it raises `ListingError` when a page cannot
    be read. Every provider module implements it next to `Issuer`."""

    def list_invoices(self, query: InvoiceListQuery) -> Iterator[PlatformInvoice]: ...


def result_reason(result: IssueResult) -> Reason:
    """The reason a non-answer carries (for `ListingError`)."""
    if isinstance(result, Rejected):
        return result.reasons[0]
    if isinstance(result, (Retryable, OutcomeUnknown, NeedsHuman, Duplicate)):
        return result.reason
    return Reason("UNEXPECTED_ANSWER", f"the platform answered {result.outcome.value}")


def listing_error(result: IssueResult) -> ListingError:
    """The error a failed list page means: a person must act only for `NeedsHuman`."""
    return ListingError(result_reason(result), retryable=not isinstance(result, NeedsHuman))


def resolve_after_submit(submitted: IssueResult, queried: IssueResult | None) -> IssueResult:
    """Combine a submit answer with the follow-up query a caller made for it.

    Pure so every provider (and the pipeline) resolves lost answers the same way:
    a query that finds the document wins; a query that finds nothing after an
    unknown outcome means "send it again, same serial"; anything else keeps the
    outcome unknown -- never "failed", because the document may yet exist.
    """
    if not isinstance(submitted, (Duplicate, OutcomeUnknown)) or queried is None:
        return submitted
    if isinstance(queried, (Issued, Processing, Rejected)):
        return queried
    if isinstance(queried, Retryable) and queried.resubmit:
        return queried
    if isinstance(queried, NotFound) and isinstance(submitted, OutcomeUnknown):
        return Retryable(
            submitted.serial,
            Reason(
                "NOT_RECEIVED",
                "the provider has no document under this serial; "
                "send it again with the same serial",
            ),
            resubmit=True,
        )
    if isinstance(queried, NeedsHuman):
        return queried
    reason = submitted.reason
    return OutcomeUnknown(
        submitted.serial,
        Reason(reason.code, f"{reason.message} (unresolved by query: {queried.outcome.value})"),
    )


def serial_of(invoice: InvoicePayload) -> str:
    """The idempotency key inside a canonical invoice (mapping or JSON bytes)."""
    doc = json.loads(invoice) if isinstance(invoice, bytes) else invoice
    serial = doc.get("serial") if isinstance(doc, Mapping) else None
    if not isinstance(serial, str) or not serial:
        raise ValueError("the invoice has no serial")
    return serial


def issue_or_resolve(issuer: Issuer, invoice: InvoicePayload) -> IssueResult:
    """Issue, and if the answer is lost or "duplicate", ask the provider what happened."""
    submitted = issuer.issue(invoice)
    if isinstance(submitted, (Duplicate, OutcomeUnknown)):
        return resolve_after_submit(submitted, issuer.query(submitted.serial))
    return submitted


def reverse_or_resolve(issuer: Issuer, request: ReversalRequest) -> IssueResult:
    submitted = issuer.reverse(request)
    if isinstance(submitted, (Duplicate, OutcomeUnknown)):
        return resolve_after_submit(submitted, issuer.query_reversal(request.serial))
    return submitted
