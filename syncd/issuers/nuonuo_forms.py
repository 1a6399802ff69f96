"""Buyer-raised red-confirmation forms on Nuonuo's open platform (docs/issuers.md).

`nuonuo.OpeMplatform.queryInvoiceRedConfirm` as the seller (`identity` 0) lists forms by
state (`billStatus` 03: entered by the buyer, waiting for the seller) within a date range
of at most 90 days, 50 a page; `nuonuo.OpeMplatform.confirm` answers one form
(`confirmAgreement` 1 agree / 0 refuse, `confirmReason`), naming it by `billUuid` (the
platform prefers it over `billId` and `billNo`). A form agreed by both sides becomes a red
invoice the bureau issues itself; the form then carries `redInvoiceNumber`.

The list answer carries no deadline: it is `billTime` + 72 h (the bureau voids a form
unanswered for 72 hours, state 07). A refused `confirm` is explained by reading the form
back: already agreed (the same decision: a no-op), refused, or expired.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from syncd.issuers.base import IssueResult, NeedsHuman, Reason
from syncd.issuers.redforms import (
    BuyerRedForm,
    DecideAnswer,
    FormAnswer,
    FormDecided,
    FormRefused,
    FormStatus,
    FormsUnavailable,
    ListAnswer,
)

CONFIRM: Final = "nuonuo.OpeMplatform.confirm"
RED_QUERY: Final = "nuonuo.OpeMplatform.queryInvoiceRedConfirm"
SUCCESS: Final = "E0000"
BEIJING: Final = timezone(timedelta(hours=8))
#: the bureau voids a form not answered within 72 hours (state 07)
CONFIRM_WINDOW: Final = timedelta(hours=72)
PAGE_SIZE: Final = 50
#: forms older than the confirmation window cannot wait for us any more; a day of margin
LOOKBACK_DAYS: Final = 4

REASONS: Final[Mapping[str, str]] = {
    "1": "SALES_RETURN",
    "2": "INVOICING_ERROR",
    "3": "SERVICE_STOPPED",
    "4": "ALLOWANCE",
}

#: (code, describe, result) of one business call, or the result a failure means
Call = Callable[[str, Mapping[str, Any]], Any]


def _bill_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=BEIJING)
        except ValueError:
            continue
    return None


def _money(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None


def form_of(item: Mapping[str, Any]) -> BuyerRedForm | None:
    """One `queryInvoiceRedConfirm` list item -> a form; None if it is not one we can use."""
    uuid, number = item.get("billUuid"), item.get("blueElecInvoiceNumber")
    raised = _bill_time(item.get("billTime"))
    if not isinstance(uuid, str) or not uuid or not isinstance(number, str) or raised is None:
        return None
    state = str(item.get("billStatus") or "")
    red_no = item.get("redInvoiceNumber") or None
    status: FormStatus
    if state == "03":
        status = "PENDING"
    elif state in ("01", "04"):
        status = "ISSUED" if red_no else "CONFIRMED"
    elif state == "07":
        status = "EXPIRED"
    else:  # 05/06 refused, 08/09 revoked: the form will not become a red invoice
        status = "REJECTED"
    net, tax = _money(item.get("taxExcludedAmount")), _money(item.get("taxAmount"))
    gross = -(net + tax) if net is not None and tax is not None else None
    return BuyerRedForm(
        form_id=uuid,
        original_invoice_no=number,
        reason=REASONS.get(str(item.get("redReason")), str(item.get("redReason") or "")),
        status=status,
        raised_at=raised.isoformat(),
        deadline=(raised + CONFIRM_WINDOW).isoformat(),
        gross_amount=gross,
        red_invoice_no=red_no,
        red_issued_at=None,
        message=item.get("billMessage") or None,
    )


def list_payload(today: datetime, page: int) -> dict[str, str]:
    start = today.astimezone(BEIJING).date() - timedelta(days=LOOKBACK_DAYS)
    return {
        "identity": "0",
        "billStatus": "03",
        "billTimeStart": start.isoformat(),
        "billTimeEnd": today.astimezone(BEIJING).date().isoformat(),
        "pageNo": str(page),
        "pageSize": str(PAGE_SIZE),
    }


def _trouble(answer: IssueResult) -> FormsUnavailable:
    reason = getattr(answer, "reason", Reason("UNAVAILABLE", "the platform did not answer"))
    return FormsUnavailable(reason, needs_human=isinstance(answer, NeedsHuman))


def _envelope_trouble(code: str, describe: str, credential: bool) -> FormsUnavailable:
    return FormsUnavailable(Reason(code, describe), needs_human=credential)


class NuonuoForms:
    """The three form calls over a `NuonuoIssuer.call`-like function: `call(method,
    payload)` answers `(code, describe, result)` or a failure result."""

    def __init__(
        self, call: Call, is_credential: Callable[[str], bool], clock: Callable[[], datetime]
    ) -> None:
        self._call = call
        self._credential = is_credential
        self._clock = clock

    def list(self) -> ListAnswer:
        forms: list[BuyerRedForm] = []
        page = 1
        while True:
            answer = self._call(RED_QUERY, list_payload(self._clock(), page))
            if not isinstance(answer, tuple):
                return _trouble(answer)
            code, describe, result = answer
            if code != SUCCESS:
                return _envelope_trouble(code, describe, self._credential(code))
            result = result if isinstance(result, Mapping) else {}
            items = [i for i in result.get("list") or () if isinstance(i, Mapping)]
            forms += [f for f in map(form_of, items) if f is not None]
            try:
                total = int(result.get("total") or 0)
            except (TypeError, ValueError):
                total = 0
            if not items or page * PAGE_SIZE >= total or page >= 100:
                return tuple(forms)
            page += 1

    def get(self, form_id: str) -> FormAnswer:
        answer = self._call(RED_QUERY, {"identity": "0", "billUuid": form_id})
        if not isinstance(answer, tuple):
            return _trouble(answer)
        code, describe, result = answer
        if code != SUCCESS:
            return _envelope_trouble(code, describe, self._credential(code))
        result = result if isinstance(result, Mapping) else {}
        for item in result.get("list") or ():
            if isinstance(item, Mapping) and item.get("billUuid") == form_id:
                form = form_of(item)
                if form is not None:
                    return form
        return FormRefused("NOT_FOUND", f"the platform has no red-confirmation form {form_id}")

    def decide(self, form_id: str, *, confirm: bool, reason: str) -> DecideAnswer:
        before = self.get(form_id)
        if not isinstance(before, BuyerRedForm):
            return before
        done = _settled(before, confirm)
        if done is not None:
            return done
        answer = self._call(
            CONFIRM,
            {
                "identity": "0",
                "billUuid": form_id,
                "confirmAgreement": "1" if confirm else "0",
                "confirmReason": reason[:200],
            },
        )
        if not isinstance(answer, tuple):
            return _trouble(answer)
        code, describe, _ = answer
        if self._credential(code):
            return _envelope_trouble(code, describe, True)
        after = self.get(form_id)
        if not isinstance(after, BuyerRedForm):
            return after if code == SUCCESS else FormRefused(code, describe)
        if code == SUCCESS:
            return FormDecided(after)
        # refused: the form tells why (decided meanwhile, expired, revoked)
        return _settled(after, confirm) or FormRefused(code, describe, after)


def _settled(form: BuyerRedForm, confirm: bool) -> DecideAnswer | None:
    """The answer a form that no longer waits gives to a decision; None while it waits."""
    if form.status == "PENDING":
        return None
    if (confirm and form.status in ("CONFIRMED", "ISSUED")) or (
        not confirm and form.status == "REJECTED"
    ):
        return FormDecided(form, already=True)
    if form.status == "EXPIRED":
        return FormRefused("FORM_EXPIRED", "the form expired before it was decided", form)
    return FormRefused("FORM_DECIDED", f"the form is already {form.status}", form)


__all__ = ["CONFIRM", "NuonuoForms", "form_of", "list_payload"]
