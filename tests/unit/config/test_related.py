"""The packaged-ERP config language: related rows, line filters, side-table write-back
(config/tryton.yaml is the worked example), and how mapped rows read related values."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from syncd.config import ConfigError, load_config
from syncd.config.related import Unresolved, needed_columns
from syncd.identity import DocumentIdentity, DocumentKind
from syncd.invoice.from_erp import build_blue
from tests.unit.config_helpers import ROOT

TRYTON = ROOT / "config" / "tryton.yaml"
TEXT = TRYTON.read_text(encoding="utf-8")


def write(tmp_path: Path, old: str, new: str) -> Path:
    assert old in TEXT, old
    path = tmp_path / "tryton.yaml"
    path.write_text(TEXT.replace(old, new, 1), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


def line_no(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_tryton_config_loads():
    doc = load_config(TRYTON).documents["customer_invoice"]
    assert list(doc.related) == ["party", "uscc", "address"]
    assert doc.related["uscc"].where == {"type": "cn_vat"}
    assert doc.lines.where == {"type": "line"}
    vat = doc.lines.related["vat"]
    assert vat.exactly_one and vat.through is not None
    assert vat.through.table == "public.account_invoice_line-account_tax"
    assert doc.write_back.upsert and doc.write_back.migration
    # related columns are not columns of the invoice table
    assert doc.source_columns() == {
        "id",
        "state",
        "type",
        "sequence_type_cache",
        "party",
        "invoice_address",
        "number",
        "invoice_date",
    }


def test_columns_to_select_per_relation():
    doc = load_config(TRYTON).documents["customer_invoice"]
    assert needed_columns(doc.related, doc.header_reads()) == {
        "party": ["id", "name"],
        "uscc": ["code"],
        "address": ["city", "street_unstructured"],
    }
    assert needed_columns(doc.lines.related, doc.lines.reads())["product"] == ["id", "template"]


def test_a_field_naming_an_unknown_relation(tmp_path):
    path = write(tmp_path, "tax_id: uscc.code", "tax_id: usc.code")
    [problem] = problems(path)
    assert "'usc.code' reads relation 'usc', which is not under related" in problem
    assert "known: party, uscc, address" in problem


def test_a_relation_building_on_a_later_one(tmp_path):
    path = write(
        tmp_path,
        "      party: {table: public.party_party, join: {id: party}}\n",
        "",
    )
    path.write_text(
        path.read_text().replace(
            "      address: {table: public.party_address, join: {id: invoice_address}}\n",
            "      address: {table: public.party_address, join: {id: invoice_address}}\n"
            "      party: {table: public.party_party, join: {id: party}}\n",
        )
    )
    [problem] = problems(path)
    assert "related.uscc: 'party.id' names no relation defined before it" in problem


def test_join_and_through_are_exclusive(tmp_path):
    path = write(
        tmp_path,
        "          table: public.account_tax\n",
        "          table: public.account_tax\n          join: {id: tax}\n",
    )
    [problem] = problems(path)
    assert "give exactly one of join (a foreign key) or through (a link table)" in problem
    assert problem.startswith(f"{path}:")


def test_yaml_on_is_not_a_key_name(tmp_path):
    """`on:` is YAML 1.1 for true; the language says `join:` and points at the line."""
    path = write(
        tmp_path,
        "party: {table: public.party_party, join: {id: party}}",
        "party: {table: public.party_party, on: {id: party}}",
    )
    found = problems(path)
    assert any(f":{line_no(path, 'party: {table')}:" in p for p in found), found


def test_side_table_must_not_be_a_captured_table(tmp_path):
    path = write(
        tmp_path, "table: syncd_tryton.invoice_result", "table: public.account_invoice_line"
    )
    [problem] = problems(path)
    assert "write_back.table must differ from table and lines.table" in problem


def test_line_filter_columns_are_plain_names(tmp_path):
    path = write(tmp_path, "where: {type: line}", "where: {product.type: line}")
    [problem] = problems(path)
    assert "lines.where: 'product.type' is not a column name" in problem


# ----------------------------------------------------------------------------- mapping


def ident() -> DocumentIdentity:
    return DocumentIdentity(
        "customer_invoice", "public.account_invoice", (("id", 3),), DocumentKind.ISSUE, 0
    )


def header(**changes):
    row = {
        "id": 3,
        "state": "posted",
        "type": "out",
        "number": "INV2026-00001",
        "invoice_date": None,
        "party": 4,
        "invoice_address": 4,
        "sequence_type_cache": "invoice",
        "party.id": 4,
        "party.name": "Shanghai Bright Future Trading Co., Ltd.",
        "uscc.code": "91310000MA1FL4T5X6",
        "address.street_unstructured": "88 Nanjing Rd",
        "address.city": "Shanghai",
    }
    row.update(changes)
    return row


def line(**changes):
    row = {
        "id": 9,
        "invoice": 3,
        "type": "line",
        "quantity": 2.0,
        "unit_price": Decimal("6000.00"),
        "template.name": "Laptop computer",
        "tax_code.code": "1090511030000000000",
        "uom.symbol": "u",
        "vat.rate": Decimal("0.13"),
        "product.id": 1,
        "product.template": 1,
    }
    row.update(changes)
    return row


def test_related_values_make_the_invoice():
    doc = load_config(TRYTON).documents["customer_invoice"]
    result = build_blue(doc, header(), [line()], ident())
    assert result.ok, result.summary()
    assert result.invoice is not None
    assert result.invoice.buyer.name == "Shanghai Bright Future Trading Co., Ltd."
    assert result.invoice.buyer.tax_id == "91310000MA1FL4T5X6"
    assert result.invoice.buyer.address == "88 Nanjing Rd Shanghai"
    assert result.invoice.remark == "Tryton invoice INV2026-00001"
    [item] = result.invoice.lines
    assert (item.name, item.tax_code, item.tax_rate) == (
        "Laptop computer",
        "1090511030000000000",
        Decimal("0.13"),
    )


def test_a_line_with_several_or_no_vat_is_a_readable_problem():
    doc = load_config(TRYTON).documents["customer_invoice"]
    two = Unresolved(
        "related vat: 2 rows in public.account_tax for this line (id=9); exactly one expected"
    )
    none = Unresolved(
        "related vat: no row in public.account_tax for this line; exactly one expected"
    )
    result = build_blue(
        doc, header(), [line(**{"vat.rate": two}), line(id=10, **{"vat.rate": none})], ident()
    )
    assert not result.ok
    assert [p.code for p in result.problems] == ["RELATED", "RELATED"]
    assert result.problems[0].path == "lines[9].tax_rate"
    assert "2 rows in public.account_tax" in str(result.problems[0])
    assert "no row in public.account_tax" in str(result.problems[1])


def test_a_missing_relation_reads_null():
    """No address row: the address is left out; no USCC row: the invoice says what is
    missing (a company buyer needs its tax ID)."""
    doc = load_config(TRYTON).documents["customer_invoice"]
    gone = {"address.street_unstructured": None, "address.city": None}
    result = build_blue(doc, header(**gone), [line()], ident())
    assert result.ok, result.summary()
    assert result.invoice is not None and result.invoice.buyer.address is None
    result = build_blue(doc, header(**{"uscc.code": None}), [line()], ident())
    assert [p.path for p in result.problems] == ["buyer.tax_id"]
