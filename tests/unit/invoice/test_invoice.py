import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from syncd.identity import canonical_json, payload_hash
from syncd.invoice.model import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    LineNature,
    PriceBasis,
    format_amount,
    format_plain,
    places_within,
)
from tests.unit.invoice_samples import blue, line, multi_rate, red_of, with_discount

D = Decimal

DOC = Path(__file__).resolve().parents[3] / "docs" / "invoice-format.md"


# The wire-format document's example as of this writing (kept here so the pinned
# hash does not move when the document's example is edited).
PINNED_JSON = """{"serial":"SX3F7Q2M9KD4HT6W1B8N5C0RJA","kind":"BLUE","invoice_type":"ORDINARY",
"original_invoice_no":null,"reversal_reason":null,"currency":"CNY",
"price_basis":"TAX_EXCLUSIVE","issue_date":"2026-11-27",
"seller":{"name":"Acme Trading Co., Ltd.","tax_id":"91310115MA1K4PLN8E",
"address":"1 Century Ave, Shanghai","phone":"021-5555 0000",
"bank_name":"Bank of China Shanghai Branch","bank_account":"4567 8901 2345"},
"buyer":{"name":"Example Buyer Ltd.","tax_id":"91110108MA01ABCD2X","address":null,
"phone":null,"bank_name":null,"bank_account":null,"email":"ap@example.com",
"natural_person":false},"drawer":"Li Lei","payee":null,"reviewer":null,
"remark":"SO-2026-000042","lines":[{"line_no":1,"nature":"NORMAL",
"name":"Consulting service","tax_code":"3040201000000000000","spec":null,"unit":"hour",
"quantity":"2","unit_price":"82.57","net_amount":"165.14","tax_rate":"0.09",
"tax_amount":"14.86","gross_amount":"180.00","tax_policy":null}],
"tax_breakdown":[{"tax_rate":"0.09","net_amount":"165.14","tax_amount":"14.86"}],
"totals":{"net_amount":"165.14","tax_amount":"14.86","gross_amount":"180.00"},
"source":{"document":"sales_order","table":"erp.sales_order","key":{"id":42},"revision":0}}"""


def doc_example() -> str:
    found = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None
    return found.group(1)


def test_document_example_parses_with_exact_decimals():
    invoice = Invoice.model_validate_json(doc_example())
    (ln,) = invoice.lines
    assert ln.net_amount == D("165.14") and isinstance(ln.net_amount, D)
    assert ln.tax_rate == D("0.09")
    assert invoice.kind is InvoiceKind.BLUE
    assert invoice.price_basis is PriceBasis.TAX_EXCLUSIVE
    assert invoice.source.key == {"id": 42}


def test_document_example_round_trips_to_the_same_json_values():
    original = json.loads(doc_example())
    rendered = json.loads(Invoice.model_validate_json(doc_example()).to_json())
    assert rendered == original


@pytest.mark.parametrize("make", [blue, multi_rate, with_discount, lambda: red_of(multi_rate())])
def test_json_round_trip(make):
    invoice = make()
    assert Invoice.model_validate_json(invoice.to_json()) == invoice


def test_amounts_are_strings_with_exactly_two_places_quantities_minimal():
    data = json.loads(blue([line("x", "2.500", "4", "0.130")]).to_json())
    ln = data["lines"][0]
    assert (ln["quantity"], ln["unit_price"], ln["tax_rate"]) == ("2.5", "4", "0.13")
    assert (ln["net_amount"], ln["tax_amount"], ln["gross_amount"]) == ("10.00", "1.30", "11.30")
    assert data["totals"] == {"net_amount": "10.00", "tax_amount": "1.30", "gross_amount": "11.30"}
    assert data["tax_breakdown"] == [
        {"tax_rate": "0.13", "net_amount": "10.00", "tax_amount": "1.30"}
    ]


def test_formatting_helpers():
    assert format_amount(D("5")) == "5.00"
    assert format_amount(D("-0.00")) == "0.00"
    assert format_amount(D("1E+3")) == "1000.00"
    assert format_amount(D("1.005")) == "1.005"  # never silently rounded
    assert format_plain(D("100")) == "100"
    assert format_plain(D("1E+2")) == "100"
    assert format_plain(D("0.000")) == "0"
    assert format_plain(D("0.00000001")) == "0.00000001"


def test_json_numbers_floats_and_non_finite_values_are_rejected():
    text = doc_example()
    with pytest.raises(ValidationError, match="must be JSON strings"):
        Invoice.model_validate_json(text.replace('"quantity": "2"', '"quantity": 2'))
    with pytest.raises(ValidationError, match="must be JSON strings"):
        Invoice.model_validate_json(text.replace('"unit_price": "82.57"', '"unit_price": 82.57'))
    with pytest.raises(ValidationError, match="finite"):
        Invoice.model_validate_json(text.replace('"quantity": "2"', '"quantity": "NaN"'))
    with pytest.raises(ValidationError, match="not a decimal"):
        Invoice.model_validate_json(text.replace('"quantity": "2"', '"quantity": "two"'))
    with pytest.raises(ValidationError, match="out of range"):
        Invoice.model_validate_json(text.replace('"quantity": "2"', '"quantity": "1e30"'))
    with pytest.raises(ValidationError, match="never as floats"):
        line_dict = blue().lines[0].model_dump()
        InvoiceLine(**{**line_dict, "quantity": 2.0})


def test_unknown_fields_are_rejected():
    data = json.loads(doc_example())
    data["lines"][0]["discount"] = "1.00"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Invoice.model_validate(data)
    data = json.loads(doc_example())
    data["seller"]["email"] = "x@example.com"  # only the buyer has an e-mail address
    with pytest.raises(ValidationError):
        Invoice.model_validate(data)


def test_models_are_frozen():
    invoice = blue()
    with pytest.raises(ValidationError):
        invoice.serial = "SOTHER000"  # type: ignore[misc]


def _hash(invoice: Invoice) -> str:
    """What the ledger freezes beside the payload (syncd.identity.payload_hash)."""
    return payload_hash(invoice.model_dump(mode="json"))


def test_payload_hash_is_stable_and_format_independent():
    a = blue([line("x", "2", "82.57", "0.09")])
    b = blue([line("x", "2.000", "82.570", "0.090")])
    assert _hash(a) == _hash(b)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", _hash(a))
    assert _hash(a) != _hash(blue([line("x", "2", "82.57", "0.09"), line("y", "1", "1", "0.09")]))
    # Pinned: the ledger compares against hashes computed by earlier versions.
    assert _hash(Invoice.model_validate_json(PINNED_JSON)) == (
        "sha256:c63b1a53a9232c4669cc6f48c41a290b8aaa99c40a19afa5057d92761eefda58"
    )


def test_canonical_json_is_sorted_compact_utf8():
    invoice = blue([line("咨询服务")])
    text = canonical_json(invoice.model_dump(mode="json"))
    assert text == json.dumps(
        json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    assert text.startswith('{"buyer":{"address":null,')
    assert "咨询服务" in text


def test_nature_and_nulls_are_rendered():
    data = json.loads(with_discount().to_json())
    assert [ln["nature"] for ln in data["lines"]] == ["DISCOUNTED", "DISCOUNT", "NORMAL"]
    assert data["lines"][1]["quantity"] is None and data["lines"][1]["unit_price"] is None
    assert LineNature(data["lines"][0]["nature"]) is LineNature.DISCOUNTED


@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(min_value=0, max_value=30))
def test_places_within_reads_the_written_exponent(value, places):
    exponent = value.as_tuple().exponent
    assert places_within(value, places) == (-exponent <= places)
