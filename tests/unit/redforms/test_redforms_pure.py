"""The pure parts of buyer-raised red-letter forms: the providers' answers mapped onto
`syncd.issuers.redforms`, the ERP outcome row, the `red_forms:` config."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.config import ConfigError, load_config
from syncd.erp.redforms import outcome_values
from syncd.issuers.base import Reason, Retryable
from syncd.issuers.nuonuo_forms import NuonuoForms, form_of, list_payload
from syncd.issuers.redforms import BuyerRedForm, FormDecided, FormRefused, FormsUnavailable
from syncd.issuers.sandbox import buyer_form_of, classify_form_reply, classify_forms_reply
from syncd.ledger.redforms import FormRow
from tests.unit.config_helpers import DEMO

VIEW: dict[str, Any] = {
    "serial": "BF00000000000001",
    "status": "PENDING_SELLER",
    "original_invoice_no": "26312000000000000001",
    "reason": "SALES_RETURN",
    "raised_by": "BUYER",
    "created_at": "2026-12-03T10:00:00+00:00",
    "expires_at": "2026-12-06T10:00:00+00:00",
    "totals_of_original": {"net_amount": "100.00", "tax_amount": "13.00", "gross_amount": "113.00"},
    "red_invoice_no": None,
    "issued_at": None,
    "failure_code": None,
    "failure_reason": None,
}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("PENDING_SELLER", None, "PENDING"),
        ("PROCESSING", None, "CONFIRMED"),
        ("ISSUED", None, "ISSUED"),
        ("FAILED", "SELLER_REJECTED", "REJECTED"),
        ("FAILED", "CONFIRMATION_EXPIRED", "EXPIRED"),
    ],
)
def test_sandbox_form_states(status: str, code: str | None, expected: str) -> None:
    form = buyer_form_of({**VIEW, "status": status, "failure_code": code})
    assert form is not None and form.status == expected
    assert form.gross_amount == Decimal("113.00") and form.deadline == VIEW["expires_at"]


def test_sandbox_malformed_views_are_skipped_not_guessed() -> None:
    assert buyer_form_of({**VIEW, "status": "WHATEVER"}) is None
    assert buyer_form_of({**VIEW, "serial": None}) is None
    listed = classify_forms_reply(200, json.dumps({"forms": [VIEW, {"x": 1}]}).encode())
    assert isinstance(listed, tuple) and [f.form_id for f in listed] == [VIEW["serial"]]


def test_sandbox_decision_replies() -> None:
    same = classify_form_reply(
        "F", 200, json.dumps({**VIEW, "unchanged": True}).encode(), deciding=True
    )
    assert isinstance(same, FormDecided) and same.already
    body = {"code": "FORM_DECIDED", "message": "m", "form": {**VIEW, "status": "PROCESSING"}}
    refused = classify_form_reply("F", 409, json.dumps(body).encode(), deciding=True)
    assert isinstance(refused, FormRefused) and refused.code == "FORM_DECIDED"
    assert refused.form is not None and refused.form.status == "CONFIRMED"
    down = classify_form_reply("F", 503, b'{"code": "X"}', deciding=True)
    assert isinstance(down, FormsUnavailable) and not down.needs_human
    human = classify_forms_reply(403, b'{"code": "SESSION_EXPIRED"}')
    assert isinstance(human, FormsUnavailable) and human.needs_human
    garbled = classify_forms_reply(200, b"<html>")
    assert isinstance(garbled, FormsUnavailable)


ITEM: dict[str, Any] = {
    "billUuid": "uuid1",
    "billId": "B1",
    "billNo": "440112220710031",
    "billStatus": "03",
    "applySource": 1,
    "blueElecInvoiceNumber": "26312000000000000001",
    "billTime": "2026-12-03 18:00:00",
    "taxExcludedAmount": "-100.00",
    "taxAmount": "-13.00",
    "redReason": "2",
}


def test_nuonuo_form_deadline_is_bill_time_plus_72_hours_in_beijing() -> None:
    form = form_of(ITEM)
    assert form is not None
    assert form.status == "PENDING" and form.reason == "INVOICING_ERROR"
    assert datetime.fromisoformat(form.deadline).astimezone(UTC) == datetime(
        2026, 12, 6, 10, 0, tzinfo=UTC
    )
    assert form.gross_amount == Decimal("113.00")


@pytest.mark.parametrize(
    ("state", "red", "expected"),
    [
        ("04", None, "CONFIRMED"),
        ("04", "1" * 20, "ISSUED"),
        ("01", "1" * 20, "ISSUED"),
        ("06", None, "REJECTED"),
        ("07", None, "EXPIRED"),
        ("08", None, "REJECTED"),
    ],
)
def test_nuonuo_form_states(state: str, red: str | None, expected: str) -> None:
    form = form_of({**ITEM, "billStatus": state, "redInvoiceNumber": red})
    assert form is not None and form.status == expected


def test_nuonuo_list_range_stays_inside_the_platform_limit() -> None:
    payload = list_payload(datetime(2026, 12, 3, 20, 0, tzinfo=UTC), 2)  # 04:00 next day, BJ
    assert payload["billTimeEnd"] == "2026-12-04" and payload["billTimeStart"] == "2026-11-30"
    assert payload["identity"] == "0" and payload["billStatus"] == "03"
    assert payload["pageNo"] == "2" and int(payload["pageSize"]) <= 50


class FakeGateway:
    def __init__(self, states: list[str], confirm_code: str = "E0000") -> None:
        self.states = states
        self.confirm_code = confirm_code
        self.calls: list[str] = []

    def __call__(self, method: str, payload: Any) -> object:
        self.calls.append(method)
        if method.endswith(".confirm"):
            return (self.confirm_code, "refused", None)
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return ("E0000", "", {"total": 1, "list": [{**ITEM, "billStatus": state}]})


def _forms(gateway: FakeGateway) -> NuonuoForms:
    return NuonuoForms(gateway, lambda code: code.startswith("0701"), lambda: datetime.now(UTC))


def test_nuonuo_decision_is_sent_once_and_a_repeat_is_read_back() -> None:
    gateway = FakeGateway(["03", "04"])
    first = _forms(gateway).decide("uuid1", confirm=True, reason="ok")
    assert isinstance(first, FormDecided) and not first.already
    again = _forms(gateway).decide("uuid1", confirm=True, reason="ok")
    assert isinstance(again, FormDecided) and again.already
    assert gateway.calls.count("nuonuo.OpeMplatform.confirm") == 1


def test_nuonuo_refusal_is_explained_by_the_form() -> None:
    expired = _forms(FakeGateway(["03", "07"], confirm_code="E9108")).decide(
        "uuid1", confirm=True, reason="late"
    )
    assert isinstance(expired, FormRefused) and expired.code == "FORM_EXPIRED"
    other = _forms(FakeGateway(["06"])).decide("uuid1", confirm=True, reason="x")
    assert isinstance(other, FormRefused) and other.code == "FORM_DECIDED"


def test_nuonuo_unreachable_platform_is_unavailable() -> None:
    def down(method: str, payload: Any) -> object:
        return Retryable("FORMS", Reason("CONNECTERROR", "refused"))

    listed = NuonuoForms(down, lambda c: False, lambda: datetime.now(UTC)).list()
    assert isinstance(listed, FormsUnavailable) and listed.reason.code == "CONNECTERROR"


def _row(**changes: Any) -> FormRow:
    base: dict[str, Any] = {
        "id": 1,
        "provider": "sandbox",
        "form_id": "BF1",
        "original_invoice_no": "26312000000000000001",
        "document_id": 7,
        "document_type": "sales_order",
        "document_key": '{"id":42}',
        "reason": "SALES_RETURN",
        "status": "PENDING",
        "gross_amount": Decimal("113.00"),
        "raised_at": None,
        "deadline": datetime(2026, 12, 6, tzinfo=UTC),
        "decided_at": None,
        "decided_by": None,
        "decision_reason": None,
        "red_invoice_no": None,
        "red_issued_at": None,
        "discovered_at": datetime(2026, 12, 3, tzinfo=UTC),
    }
    return FormRow(**{**base, **changes})


RED_FORMS_YAML = """
red_forms:
  poll_interval_seconds: 30
  write_back:
    table: erp.red_form_outcome
    columns:
      status: form_status
      red_invoice_no: red_no
      document_key: order_ref
    status_values:
      issued: DONE
"""


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_"):
            monkeypatch.delenv(name)


def _config_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(DEMO.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


@pytest.mark.usefixtures("_clean_env")
def test_outcome_row_maps_only_configured_columns(tmp_path: Path) -> None:
    config = load_config(_config_with(tmp_path, RED_FORMS_YAML))
    wb = config.red_forms.write_back
    assert wb is not None and config.red_forms.poll_interval_seconds == 30
    values = outcome_values(wb, _row(status="ISSUED", red_invoice_no="2" * 20))
    assert values == {
        "form_id": "BF1",
        "form_status": "DONE",
        "red_no": "2" * 20,
        "order_ref": '{"id":42}',
    }
    assert outcome_values(wb, _row())["form_status"] == "PENDING"


@pytest.mark.usefixtures("_clean_env")
@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("red_no", "form_status", "mapped more than once"),
        ("erp.red_form_outcome", "red_form_outcome", "red_forms.write_back.table"),
        ("poll_interval_seconds: 30", "poll_interval_seconds: -1", "poll_interval_seconds"),
        ("red_invoice_no: red_no", "red_invoice: red_no", "red_invoice"),
        ("order_ref", "order-ref", "document_key"),
    ],
)
def test_bad_red_forms_config_is_located(tmp_path: Path, old: str, new: str, needle: str) -> None:
    path = _config_with(tmp_path, RED_FORMS_YAML.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = "\n".join(str(p) for p in exc.value.problems)
    assert needle in text and str(path) in text


def test_form_types_are_plain_values() -> None:
    form = BuyerRedForm("F", "1" * 20, "SALES_RETURN", "PENDING", "", "")
    assert FormDecided(form) == FormDecided(form, already=False)
