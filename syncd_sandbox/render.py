"""The issued document as the platform hands it out: XML (the "legal original") and HTML.

Built with ElementTree / html.escape so buyer names can never break the markup.
The XML follows the shape of a UBL 2.1 Invoice / CreditNote closely enough for
humans and tools to recognise, without claiming Peppol conformance.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from xml.etree import ElementTree as ET

from fpdf import FPDF  # imported with the sandbox, not on its first PDF

from syncd_sandbox.rules import negate_amount

_UBL_INVOICE: Final = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
_UBL_CREDIT: Final = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_CBC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
_CAC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"


def _blue_payload(row: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(row["payload"])
    return payload["blue"] if row["kind"] == "RED" else payload


def _lines(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Line amounts as issued: a red invoice carries the blue amounts negated."""
    lines: list[dict[str, Any]] = _blue_payload(row)["lines"]
    if row["kind"] != "RED":
        return lines
    return [
        {
            **ln,
            **{k: negate_amount(ln[k]) for k in ("net_amount", "tax_amount", "gross_amount")},
            "quantity": None if ln.get("quantity") is None else str(-Decimal(ln["quantity"])),
        }
        for ln in lines
    ]


def render_xml(row: dict[str, Any]) -> bytes:
    red = row["kind"] == "RED"
    doc = _blue_payload(row)
    ET.register_namespace("", _UBL_CREDIT if red else _UBL_INVOICE)
    ET.register_namespace("cbc", _CBC)
    ET.register_namespace("cac", _CAC)
    namespace, tag = (_UBL_CREDIT, "CreditNote") if red else (_UBL_INVOICE, "Invoice")
    root = ET.Element(f"{{{namespace}}}{tag}")

    def cbc(parent: ET.Element, tag: str, text: str | None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{_CBC}}}{tag}", attrs)
        el.text = text
        return el

    def cac(parent: ET.Element, tag: str) -> ET.Element:
        return ET.SubElement(parent, f"{{{_CAC}}}{tag}")

    cbc(root, "CustomizationID", "syncd-sandbox:shudian:1.0")
    cbc(root, "ID", row["invoice_no"])
    cbc(root, "UUID", row["serial"])
    cbc(root, "IssueDate", (row["issued_at"] or "")[:10])
    cbc(root, "CreditNoteTypeCode" if red else "InvoiceTypeCode", "381" if red else "380")
    cbc(root, "Note", f"check code {row['check_code']}; type {row['invoice_type']}")
    cbc(root, "DocumentCurrencyCode", doc.get("currency", "CNY"))
    if red:
        ref = cac(cac(root, "BillingReference"), "InvoiceDocumentReference")
        cbc(ref, "ID", row["original_invoice_no"])
    for role, party in (
        ("AccountingSupplierParty", doc["seller"]),
        ("AccountingCustomerParty", doc["buyer"]),
    ):
        p = cac(cac(root, role), "Party")
        cbc(cac(p, "PartyName"), "Name", party["name"])
        if party.get("tax_id"):
            scheme = cac(p, "PartyTaxScheme")
            cbc(scheme, "CompanyID", party["tax_id"])
            cbc(cac(scheme, "TaxScheme"), "ID", "VAT")
    tax_total = cac(root, "TaxTotal")
    cbc(tax_total, "TaxAmount", row["tax_amount"], currencyID="CNY")
    totals = cac(root, "LegalMonetaryTotal")
    cbc(totals, "LineExtensionAmount", row["net_amount"], currencyID="CNY")
    cbc(totals, "TaxExclusiveAmount", row["net_amount"], currencyID="CNY")
    cbc(totals, "TaxInclusiveAmount", row["gross_amount"], currencyID="CNY")
    cbc(totals, "PayableAmount", row["gross_amount"], currencyID="CNY")
    for ln in _lines(row):
        line = cac(root, "CreditNoteLine" if red else "InvoiceLine")
        cbc(line, "ID", str(ln["line_no"]))
        if ln.get("quantity") is not None:
            cbc(
                line,
                "CreditedQuantity" if red else "InvoicedQuantity",
                ln["quantity"],
                unitCode=ln.get("unit") or "C62",
            )
        cbc(line, "LineExtensionAmount", ln["net_amount"], currencyID="CNY")
        item = cac(line, "Item")
        cbc(item, "Name", ln["name"])
        cbc(
            cac(item, "CommodityClassification"),
            "ItemClassificationCode",
            ln["tax_code"],
            listID="CN-TAX-CODE",
        )
        category = cac(item, "ClassifiedTaxCategory")
        cbc(category, "Percent", str(Decimal(ln["tax_rate"]) * 100))
        cbc(cac(category, "TaxScheme"), "ID", "VAT")
        if ln.get("unit_price") is not None:
            cbc(cac(line, "Price"), "PriceAmount", ln["unit_price"], currencyID="CNY")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def render_html(row: dict[str, Any]) -> str:
    doc = _blue_payload(row)
    e = html.escape
    title = "红字发票 / Credit note" if row["kind"] == "RED" else "电子发票 / E-invoice"
    rows = "".join(
        f"<tr><td>{ln['line_no']}</td><td>{e(ln['name'])}</td><td>{e(ln.get('quantity') or '')}"
        f"</td><td>{e(ln.get('unit_price') or '')}</td><td>{e(ln['net_amount'])}</td>"
        f"<td>{e(ln['tax_rate'])}</td><td>{e(ln['tax_amount'])}</td></tr>"
        for ln in _lines(row)
    )
    original = (
        f"<p>Reverses invoice {e(row['original_invoice_no'])}</p>" if row["kind"] == "RED" else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(row['invoice_no'] or '')}</title></head><body>"
        f"<h1>{title}</h1><p>No. {e(row['invoice_no'] or '')} &middot; issued "
        f"{e(row['issued_at'] or '')} &middot; check code {e(row['check_code'] or '')}</p>"
        f"{original}<p>Seller: {e(doc['seller']['name'])} ({e(doc['seller']['tax_id'])})</p>"
        f"<p>Buyer: {e(doc['buyer']['name'])} ({e(doc['buyer'].get('tax_id') or '-')})</p>"
        "<table border='1'><tr><th>#</th><th>Item</th><th>Qty</th><th>Price</th><th>Net</th>"
        f"<th>Rate</th><th>Tax</th></tr>{rows}</table>"
        f"<p>Net {e(row['net_amount'])} &middot; Tax {e(row['tax_amount'])} &middot; "
        f"Total {e(row['gross_amount'])} CNY</p></body></html>"
    )


def _latin(text: object) -> str:
    """The PDF's core font covers Latin-1 only: other characters print as '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def pdf_sheet(
    title: str, issued: str | None, header: list[str], lines: list[str], total: str
) -> bytes:
    """A one-page PDF (fpdf2) of an issued invoice, the same bytes for the same invoice: its
    dates come from the invoice (`issued`, ISO 8601), never from the clock, so a
    re-download is identical."""
    try:
        created = datetime.fromisoformat(issued or "")
    except ValueError:
        created = datetime(1970, 1, 1, tzinfo=UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    pdf = FPDF()
    pdf.set_creation_date(created)
    pdf.set_title(_latin(title))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for text in header:
        pdf.cell(0, 6, _latin(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for text in lines:
        pdf.cell(0, 6, _latin(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 6, _latin(total), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def render_pdf(row: dict[str, Any]) -> bytes:
    """The invoice as the platform's PDF."""
    doc = _blue_payload(row)
    issued = row["issued_at"]
    header = [
        f"No. {row['invoice_no'] or ''}  issued {issued or ''}  "
        f"check code {row['check_code'] or ''}",
        f"Seller: {doc['seller']['name']} ({doc['seller']['tax_id']})",
        f"Buyer: {doc['buyer']['name']} ({doc['buyer'].get('tax_id') or '-'})",
    ]
    if row["kind"] == "RED":
        header.append(f"Reverses invoice {row['original_invoice_no']}")
    lines = [
        f"{ln['line_no']}. {ln['name']}  qty {ln.get('quantity') or '-'}  "
        f"net {ln['net_amount']}  rate {ln['tax_rate']}  tax {ln['tax_amount']}"
        for ln in _lines(row)
    ]
    title = "Credit note (red invoice)" if row["kind"] == "RED" else "E-invoice"
    total = f"Net {row['net_amount']}  Tax {row['tax_amount']}  Total {row['gross_amount']} CNY"
    return pdf_sheet(title, issued, header, lines, total)
