"""Writing issued invoices out for accountants and archives: CSV, JSON, UBL 2.1 in a zip.

Public API:
    InvoiceRecord                      -- one issued invoice as the ledger knows it
    FIELDS                             -- the columns of every row, in order
    row_of(record) -> dict[str, str]   -- one row: money as exact decimal text
    CsvWriter, JsonWriter, UblZipWriter -- streaming writers: add(record) ..., close()

Invariant: every writer holds one invoice at a time, never the list. CSV and JSON write
each row as it comes (JSON as one array whose elements are written one by one); the UBL
zip writes each XML as its own member as it comes and keeps the manifest's lines in a
temporary file (`manifest.csv`, added last) and the zip's directory in another, so a
million invoices cost the memory of one. Money stays `Decimal` from the ledger's JSON
text to the output text: no float in between. Nothing here does I/O beyond the streams
and the scratch files it is given.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import IO, Any, Final

from syncd.invoice.model import Invoice, format_amount
from syncd.invoice.ubl import UblError, to_ubl
from syncd.invoice.zipstream import StreamingZip

__all__ = [
    "FIELDS",
    "MANIFEST_FIELDS",
    "CsvWriter",
    "InvoiceRecord",
    "JsonWriter",
    "UblZipWriter",
    "row_of",
]

#: The columns of an export row (CSV header, JSON keys), in order.
FIELDS: Final = (
    "document_type",
    "document_key",
    "revision",
    "serial",
    "invoice_no",
    "kind",
    "original_invoice_no",
    "buyer_name",
    "buyer_tax_id",
    "currency",
    "net_amount",
    "tax_amount",
    "gross_amount",
    "issued_at",
    "state",
)

#: The columns of the UBL zip's `manifest.csv`.
MANIFEST_FIELDS: Final = (
    "file",
    "invoice_no",
    "kind",
    "serial",
    "document_type",
    "document_key",
    "gross_amount",
    "sha256",
    "status",
)


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """One issued invoice of the ledger (blue or red)."""

    id: int
    document_type: str
    document_key: str
    revision: int
    serial: str
    invoice_no: str
    kind: str  # BLUE | RED
    original_invoice_no: str | None
    buyer_name: str | None
    buyer_tax_id: str | None
    currency: str | None
    net_amount: Decimal | None
    tax_amount: Decimal | None
    gross_amount: Decimal | None
    issued_at: datetime
    state: str
    payload: Mapping[str, Any] | None = None  # only when asked for (UBL)

    @property
    def payload_pruned(self) -> bool:
        return self.net_amount is None


def _money(value: Decimal | None) -> str:
    return "" if value is None else format_amount(value)


def row_of(record: InvoiceRecord) -> dict[str, str]:
    """The export row of `record`: text only, money as exact decimals, times in UTC."""
    return {
        "document_type": record.document_type,
        "document_key": record.document_key,
        "revision": str(record.revision),
        "serial": record.serial,
        "invoice_no": record.invoice_no,
        "kind": record.kind,
        "original_invoice_no": record.original_invoice_no or "",
        "buyer_name": record.buyer_name or "",
        "buyer_tax_id": record.buyer_tax_id or "",
        "currency": record.currency or "",
        "net_amount": _money(record.net_amount),
        "tax_amount": _money(record.tax_amount),
        "gross_amount": _money(record.gross_amount),
        "issued_at": record.issued_at.astimezone(UTC).isoformat(),
        "state": record.state,
    }


class CsvWriter:
    """RFC 4180 CSV with a header row."""

    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\r\n")
        self._writer.writeheader()
        self.count = 0

    def add(self, record: InvoiceRecord) -> None:
        self._writer.writerow(row_of(record))
        self.count += 1

    def close(self) -> None:
        """Nothing buffered: every row is written as it comes."""


class JsonWriter:
    """One JSON array of row objects (money as strings), written element by element."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self.count = 0
        out.write("[")

    def add(self, record: InvoiceRecord) -> None:
        self._out.write(",\n" if self.count else "\n")
        self._out.write(json.dumps(row_of(record), ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self._out.write("\n]\n" if self.count else "]\n")


_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def member_name(record: InvoiceRecord) -> str:
    """The zip member of an invoice: its number (made path-safe) and the document kind."""
    root = "CreditNote" if record.kind == "RED" else "Invoice"
    return f"{root}/{_UNSAFE.sub('_', record.invoice_no)}.xml"


class UblZipWriter:
    """A zip of one UBL 2.1 XML per invoice (Invoice or CreditNote) and `manifest.csv`.

    `scratch` is a writable text file (a temporary file) holding the manifest's lines until
    `close` adds it as the last member; `directory` a binary one for the zip's directory
    (`syncd.invoice.zipstream`: the standard `zipfile` would keep it in memory). An invoice
    whose payload was pruned cannot be rendered: it gets a manifest line with status
    `payload pruned` and no XML (`skipped`).
    """

    def __init__(
        self,
        out: IO[bytes],
        scratch: IO[str],
        directory: IO[bytes],
        *,
        tz: tzinfo = UTC,
        when: datetime | None = None,
    ) -> None:
        self._zip = StreamingZip(out, directory, when=when or datetime.now(UTC))
        self._scratch = scratch
        self._manifest = csv.DictWriter(scratch, fieldnames=MANIFEST_FIELDS, lineterminator="\r\n")
        self._manifest.writeheader()
        self._tz = tz
        self.count = 0
        self.skipped = 0

    def add(self, record: InvoiceRecord) -> None:
        line = {
            "invoice_no": record.invoice_no,
            "kind": record.kind,
            "serial": record.serial,
            "document_type": record.document_type,
            "document_key": record.document_key,
            "gross_amount": _money(record.gross_amount),
        }
        if record.payload is None:
            self._manifest.writerow({**line, "file": "", "sha256": "", "status": "payload pruned"})
            self.skipped += 1
            return
        xml = self.render(record)
        name = member_name(record)
        self._zip.add(name, xml)
        digest = hashlib.sha256(xml).hexdigest()
        self._manifest.writerow({**line, "file": name, "sha256": digest, "status": "ok"})
        self.count += 1

    def render(self, record: InvoiceRecord) -> bytes:
        """The UBL XML of `record` (raises `UblError` for an invoice UBL cannot carry)."""
        invoice = Invoice.model_validate_json(json.dumps(record.payload))
        if invoice.kind.value != record.kind:
            raise UblError(invoice.serial, f"stored invoice is {invoice.kind.value}")
        issued_on = invoice.issue_date or record.issued_at.astimezone(self._tz).date()
        return to_ubl(invoice, issued_number=record.invoice_no, issue_date=issued_on)

    def close(self) -> None:
        self._scratch.flush()
        self._scratch.seek(0)
        self._zip.add_chunks("manifest.csv", _encoded(self._scratch))
        self._zip.close()


def _encoded(text: IO[str]) -> Iterator[bytes]:
    while chunk := text.read(1 << 16):
        yield chunk.encode("utf-8")


def text_stream(binary: IO[bytes]) -> io.TextIOWrapper:
    """A UTF-8 text view of a binary stream (newlines as written)."""
    return io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=True)
