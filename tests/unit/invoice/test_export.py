"""The export writers: exact money text, valid JSON for zero or many rows, a zip whose
manifest names every invoice (with the XML's SHA-256, or why there is none)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from syncd.invoice.export import (
    FIELDS,
    CsvWriter,
    InvoiceRecord,
    JsonWriter,
    UblZipWriter,
    member_name,
    row_of,
)
from tests.unit.invoice_samples import BLUE_NO, blue, red_of

AT = datetime(2026, 11, 27, 1, 2, 3, tzinfo=UTC)


def record(kind: str = "BLUE", *, pruned: bool = False, number: str = BLUE_NO) -> InvoiceRecord:
    invoice = blue() if kind == "BLUE" else red_of(blue())
    payload: dict[str, Any] | None = None if pruned else json.loads(invoice.to_json())
    t = invoice.totals
    return InvoiceRecord(
        id=1,
        document_type="sales_order",
        document_key='{"id":42}',
        revision=0,
        serial=invoice.serial,
        invoice_no=number,
        kind=kind,
        original_invoice_no=BLUE_NO if kind == "RED" else None,
        buyer_name=invoice.buyer.name,
        buyer_tax_id=invoice.buyer.tax_id,
        currency=None if pruned else "CNY",
        net_amount=None if pruned else t.net_amount,
        tax_amount=None if pruned else t.tax_amount,
        gross_amount=None if pruned else t.gross_amount,
        issued_at=AT,
        state="ISSUED",
        payload=payload,
    )


def test_row_keeps_money_exact_and_time_in_utc() -> None:
    row = row_of(record())
    assert tuple(row) == FIELDS
    assert Decimal(row["gross_amount"]) == blue().totals.gross_amount
    assert row["issued_at"] == "2026-11-27T01:02:03+00:00"
    assert row_of(record(pruned=True))["net_amount"] == ""


def test_json_is_one_array_for_zero_and_many_rows() -> None:
    for n in (0, 1, 3):
        out = io.StringIO()
        writer = JsonWriter(out)
        for _ in range(n):
            writer.add(record())
        writer.close()
        assert len(json.loads(out.getvalue())) == n


def test_csv_has_a_header_and_one_line_per_invoice() -> None:
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.add(record())
    writer.add(record("RED", number="26312000000000000043"))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["kind"] for r in rows] == ["BLUE", "RED"]
    assert rows[1]["original_invoice_no"] == BLUE_NO


def test_ubl_zip_has_each_invoice_and_a_manifest_with_hashes() -> None:
    buffer = io.BytesIO()
    scratch = io.StringIO()
    writer = UblZipWriter(buffer, scratch, io.BytesIO())
    writer.add(record())
    writer.add(record("RED", number="26312000000000000043"))
    writer.add(record(pruned=True, number="../../etc/passwd"))
    writer.close()
    assert (writer.count, writer.skipped) == (2, 1)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as z:
        manifest = list(csv.DictReader(io.TextIOWrapper(z.open("manifest.csv"), "utf-8")))
        assert [m["status"] for m in manifest] == ["ok", "ok", "payload pruned"]
        for m in manifest[:2]:
            assert hashlib.sha256(z.read(m["file"])).hexdigest() == m["sha256"]
        assert manifest[1]["file"].startswith("CreditNote/")
        assert b"<cbc:ID>26312000000000000043</cbc:ID>" in z.read(manifest[1]["file"])
    assert member_name(record(number="../../x y")) == "Invoice/.._.._x_y.xml"


def test_streaming_zip_opens_with_zipfile_beyond_65535_members() -> None:
    from syncd.invoice.zipstream import StreamingZip

    buffer = io.BytesIO()
    z = StreamingZip(buffer, io.BytesIO(), when=AT)
    for i in range(70_000):
        z.add(f"m/{i}.xml", b"<x>%d</x>" % i)
    z.add_chunks("big.csv", (b"a,b\r\n" for _ in range(10_000)))
    z.close()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as read:
        assert read.testzip() is None
        names = read.namelist()
        assert len(names) == 70_001 and names[69_999] == "m/69999.xml"
        assert read.read("m/123.xml") == b"<x>123</x>"
        assert read.read("big.csv") == b"a,b\r\n" * 10_000
        assert read.getinfo("m/1.xml").date_time == (2026, 11, 27, 1, 2, 2)
