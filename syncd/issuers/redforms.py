"""Red-letter forms the *buyer* raised against our invoices.

See docs/configuration.md, "Red-letter forms raised by the buyer".

Under the 数电 rules the buyer may raise a red-confirmation form (红字确认单) against an
invoice we issued; the seller confirms or rejects it before its deadline (72 h), and a
confirmed form becomes a red invoice the platform issues itself. A provider that supports
this offers three calls beside `syncd.issuers.base.Issuer`: list the forms waiting for us,
read one form, and decide one. They answer typed values, never raise for provider or
network trouble, and are safe to repeat: the same decision given twice is reported as
`already=True`, never as a second decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, Protocol, TypeAlias, runtime_checkable

from syncd.issuers.base import Reason

FormStatus: TypeAlias = Literal["PENDING", "CONFIRMED", "ISSUED", "REJECTED", "EXPIRED"]

#: The statuses after which the platform will not change a form any more.
FINAL_STATUSES: Final = frozenset({"ISSUED", "REJECTED", "EXPIRED"})


@dataclass(frozen=True, slots=True)
class BuyerRedForm:
    """One form as the platform shows it. Amounts are the original invoice's (positive);
    `deadline` and `raised_at` are ISO 8601 with an offset."""

    form_id: str
    original_invoice_no: str
    reason: str
    status: FormStatus
    raised_at: str
    deadline: str
    gross_amount: Decimal | None = None
    red_invoice_no: str | None = None
    red_issued_at: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class FormDecided:
    """The platform holds our decision; `already`: it held the same decision before."""

    form: BuyerRedForm
    already: bool = False


@dataclass(frozen=True, slots=True)
class FormRefused:
    """The platform refuses the decision: the form is unknown, expired, or was decided the
    other way (`code`: `NOT_FOUND`, `FORM_EXPIRED`, `FORM_DECIDED`, or the provider's)."""

    code: str
    message: str
    form: BuyerRedForm | None = None


@dataclass(frozen=True, slots=True)
class FormsUnavailable:
    """Nothing could be learned (network, platform error, throttling); try again later.
    `needs_human`: the account itself is refused (credentials, session)."""

    reason: Reason
    needs_human: bool = False


ListAnswer: TypeAlias = tuple[BuyerRedForm, ...] | FormsUnavailable
FormAnswer: TypeAlias = BuyerRedForm | FormRefused | FormsUnavailable
DecideAnswer: TypeAlias = FormDecided | FormRefused | FormsUnavailable


@runtime_checkable
class BuyerRedForms(Protocol):
    """What a provider offers for buyer-raised forms (the sandbox and Nuonuo do)."""

    provider: str

    def list_buyer_red_forms(self) -> ListAnswer: ...

    def buyer_red_form(self, form_id: str) -> FormAnswer: ...

    def decide_buyer_red_form(
        self, form_id: str, *, confirm: bool, reason: str
    ) -> DecideAnswer: ...

    def close(self) -> None: ...


def supports_buyer_red_forms(issuer: object) -> bool:
    return isinstance(issuer, BuyerRedForms)


__all__ = [
    "FINAL_STATUSES",
    "BuyerRedForm",
    "BuyerRedForms",
    "DecideAnswer",
    "FormAnswer",
    "FormDecided",
    "FormRefused",
    "FormStatus",
    "FormsUnavailable",
    "ListAnswer",
    "supports_buyer_red_forms",
]
