"""The canonical invoice as UBL 2.1 XML (EN 16931 core), for archives and EU-style exchange.

Public API:
    to_ubl(invoice, *, issued_number=None, issue_date=None, country="CN") -> bytes
    tax_category(line) -> str            -- S / Z / E / O
    unit_code(unit) -> str               -- UN/ECE Recommendation 20, default C62
    UblError                             -- an invoice that cannot be expressed in UBL
    CUSTOMIZATION_ID

Mapping decisions (the XML validates against the OASIS UBL 2.1 XSD):
- BLUE -> `Invoice` (type 380); RED -> `CreditNote` (381) with a
  `BillingReference` to the original number and the reason in
  `DiscrepancyResponse`. UBL credit notes carry *positive* amounts (the document
  type says it is a credit), so a red invoice's negated amounts and quantities
  are negated back; unit prices are always positive.
- `cbc:ID` is the number the platform issued if known, otherwise the serial.
- A DISCOUNTED line and its DISCOUNT line become one UBL line with a line-level
  `AllowanceCharge` (reason code 95, "Discount"): EN 16931 forbids negative
  item prices, and this is how its line net amount is defined
  (quantity x price - allowances).
- Prices in UBL are net. For tax-inclusive invoices the net unit price is
  net amount / quantity, rounded half-up to 8 places. A line without a
  quantity is rendered as 1 unit (C62) at its net amount.
- Tax categories: rate > 0 -> S; rate 0 -> E (EXEMPT), O (NOT_TAXABLE),
  otherwise Z (ZERO_RATE or no policy). One `TaxSubtotal` per (category,
  rate); category O carries no percentage. The tax classification code is the
  item's `CommodityClassification` (listID "ZZZ": mutually defined).
- Addresses are free text in the canonical model: they become one
  `AddressLine`; the country is `country` (default CN). The seller's bank
  becomes `PaymentMeans` (code 30, credit transfer); the buyer's bank is the
  buyer party's `FinancialAccount`.
Uses only the standard library's ElementTree, so lxml stays a test-only dependency.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Final

from syncd.errors import DocumentError
from syncd.invoice.model import (
    Buyer,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    LineNature,
    Party,
    PriceBasis,
    TaxPolicy,
    format_amount,
    format_plain,
)
from syncd.invoice.taxmath import DECIMAL_CONTEXT

__all__ = ["CUSTOMIZATION_ID", "UblError", "tax_category", "to_ubl", "unit_code"]

CUSTOMIZATION_ID: Final = "urn:cen.eu:en16931:2017"
_NS_INVOICE: Final = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
_NS_CREDIT: Final = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
_CAC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
_CBC: Final = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
ET.register_namespace("cac", _CAC)
ET.register_namespace("cbc", _CBC)

_PRICE_PLACES: Final = Decimal("0.00000001")
_EXEMPTION_REASON: Final = {"E": "Exempt from VAT", "O": "Not subject to VAT"}
_REASON_TEXT: Final = {
    "SALES_RETURN": "Sales return",
    "INVOICING_ERROR": "Invoicing error",
    "SERVICE_STOPPED": "Service stopped",
    "ALLOWANCE": "Sales allowance",
}

# UN/ECE Recommendation 20 codes for units whose meaning is unambiguous.
_UNIT_CODES: Final = {
    **dict.fromkeys(("hour", "hours", "hr", "h", "小时", "时"), "HUR"),
    **dict.fromkeys(("minute", "minutes", "min", "分钟"), "MIN"),
    **dict.fromkeys(("day", "days", "天", "日"), "DAY"),
    **dict.fromkeys(("week", "weeks", "周", "星期"), "WEE"),
    **dict.fromkeys(("month", "months", "月", "个月"), "MON"),
    **dict.fromkeys(("year", "years", "年"), "ANN"),
    **dict.fromkeys(("piece", "pieces", "pc", "pcs", "个", "件", "只", "台", "支"), "H87"),
    **dict.fromkeys(("set", "sets", "套"), "SET"),
    **dict.fromkeys(("kg", "kilogram", "千克", "公斤"), "KGM"),
    **dict.fromkeys(("g", "gram", "克"), "GRM"),
    **dict.fromkeys(("t", "tonne", "ton", "吨"), "TNE"),
    **dict.fromkeys(("m", "metre", "meter", "米"), "MTR"),
    **dict.fromkeys(("km", "kilometre", "kilometer", "千米", "公里"), "KMT"),
    **dict.fromkeys(("m2", "m²", "square metre", "平方米"), "MTK"),
    **dict.fromkeys(("m3", "m³", "cubic metre", "立方米"), "MTQ"),
    **dict.fromkeys(("l", "litre", "liter", "升"), "LTR"),
    **dict.fromkeys(("ml", "millilitre", "milliliter", "毫升"), "MLT"),
    **dict.fromkeys(("kwh", "千瓦时"), "KWH"),
}


class UblError(DocumentError, ValueError):
    """The invoice cannot be expressed in UBL (e.g. no issue date yet)."""

    def __init__(self, serial: str, reason: str) -> None:
        self.serial = serial
        self.reason = reason
        super().__init__(f"invoice {serial}: {reason}")


def unit_code(unit: str | None) -> str:
    """The Rec 20 code for an ERP unit name; C62 ("one") when not obvious."""
    if unit is None:
        return "C62"
    return _UNIT_CODES.get(unit.strip().lower(), "C62")


def tax_category(line: InvoiceLine) -> str:
    if line.tax_rate > 0:
        return "S"
    if line.tax_policy is TaxPolicy.EXEMPT:
        return "E"
    if line.tax_policy is TaxPolicy.NOT_TAXABLE:
        return "O"
    return "Z"


@dataclass(frozen=True, slots=True)
class _UblLine:
    line: InvoiceLine  # the NORMAL or DISCOUNTED line
    discount: InvoiceLine | None


def _ubl_lines(invoice: Invoice) -> Iterator[_UblLine]:
    lines = invoice.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.nature is LineNature.DISCOUNT:
            raise UblError(invoice.serial, f"line {i + 1}: discount line without its line")
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if line.nature is LineNature.DISCOUNTED:
            if nxt is None or nxt.nature is not LineNature.DISCOUNT:
                raise UblError(invoice.serial, f"line {i + 1}: discounted line without discount")
            yield _UblLine(line, nxt)
            i += 2
        else:
            yield _UblLine(line, None)
            i += 1


class _Writer:
    def __init__(self, invoice: Invoice, country: str) -> None:
        self.inv = invoice
        self.country = country
        self.credit = invoice.kind is InvoiceKind.RED
        self.sign = -1 if self.credit else 1

    def amt(self, parent: ET.Element, tag: str, value: Decimal) -> ET.Element:
        el = self.cbc(parent, tag, format_amount(value * self.sign))
        el.set("currencyID", self.inv.currency)
        return el

    @staticmethod
    def cbc(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        el = ET.SubElement(parent, f"{{{_CBC}}}{tag}")
        if text is not None:
            el.text = text
        return el

    @staticmethod
    def cac(parent: ET.Element, tag: str) -> ET.Element:
        return ET.SubElement(parent, f"{{{_CAC}}}{tag}")

    def document(self, number: str, issued_on: date) -> ET.Element:
        inv = self.inv
        root_ns, doc = (_NS_CREDIT, "CreditNote") if self.credit else (_NS_INVOICE, "Invoice")
        # The document namespace is declared as the default one by hand: ElementTree's
        # default_namespace option refuses the unqualified attributes UBL requires.
        root = ET.Element(doc, {"xmlns": root_ns})
        self.cbc(root, "CustomizationID", CUSTOMIZATION_ID)
        self.cbc(root, "ID", number)
        self.cbc(root, "IssueDate", issued_on.isoformat())
        self.cbc(
            root,
            "CreditNoteTypeCode" if self.credit else "InvoiceTypeCode",
            "381" if self.credit else "380",
        )
        if inv.remark:
            self.cbc(root, "Note", inv.remark)
        self.cbc(root, "DocumentCurrencyCode", inv.currency)
        if self.credit:
            if inv.original_invoice_no is None:
                raise UblError(inv.serial, "a red invoice needs the original invoice number")
            if inv.reversal_reason is not None:
                response = self.cac(root, "DiscrepancyResponse")
                self.cbc(response, "ReferenceID", inv.original_invoice_no)
                self.cbc(response, "Description", _REASON_TEXT[inv.reversal_reason.value])
            ref = self.cac(self.cac(root, "BillingReference"), "InvoiceDocumentReference")
            self.cbc(ref, "ID", inv.original_invoice_no)
        self.party(self.cac(root, "AccountingSupplierParty"), inv.seller)
        self.party(self.cac(root, "AccountingCustomerParty"), inv.buyer)
        if inv.seller.bank_account:
            means = self.cac(root, "PaymentMeans")
            self.cbc(means, "PaymentMeansCode", "30")
            self.account(self.cac(means, "PayeeFinancialAccount"), inv.seller)
        self.tax_total(root)
        self.monetary_total(root)
        for ubl_line in _ubl_lines(inv):
            self.line(root, ubl_line)
        return root

    def party(self, holder: ET.Element, party: Party) -> None:
        el = self.cac(holder, "Party")
        self.cbc(self.cac(el, "PartyName"), "Name", party.name)
        address = self.cac(el, "PostalAddress")
        if party.address:
            self.cbc(self.cac(address, "AddressLine"), "Line", party.address)
        self.cbc(self.cac(address, "Country"), "IdentificationCode", self.country)
        if party.tax_id:
            scheme = self.cac(el, "PartyTaxScheme")
            self.cbc(scheme, "CompanyID", party.tax_id)
            self.cbc(self.cac(scheme, "TaxScheme"), "ID", "VAT")
        legal = self.cac(el, "PartyLegalEntity")
        self.cbc(legal, "RegistrationName", party.name)
        if party.tax_id:
            self.cbc(legal, "CompanyID", party.tax_id)
        email = party.email if isinstance(party, Buyer) else None
        if party.phone or email:
            contact = self.cac(el, "Contact")
            if party.phone:
                self.cbc(contact, "Telephone", party.phone)
            if email:
                self.cbc(contact, "ElectronicMail", email)
        if isinstance(party, Buyer) and party.bank_account:
            self.account(self.cac(el, "FinancialAccount"), party)

    def account(self, el: ET.Element, party: Party) -> None:
        self.cbc(el, "ID", party.bank_account)
        if party.bank_name:
            self.cbc(self.cac(el, "FinancialInstitutionBranch"), "Name", party.bank_name)

    def category(self, parent: ET.Element, tag: str, code: str, rate: Decimal) -> None:
        el = self.cac(parent, tag)
        self.cbc(el, "ID", code)
        if code != "O":
            self.cbc(el, "Percent", format_plain(rate * 100))
        if code in _EXEMPTION_REASON and tag == "TaxCategory":
            self.cbc(el, "TaxExemptionReason", _EXEMPTION_REASON[code])
        self.cbc(self.cac(el, "TaxScheme"), "ID", "VAT")

    def tax_total(self, root: ET.Element) -> None:
        groups: dict[tuple[Decimal, str], tuple[Decimal, Decimal]] = {}
        for line in self.inv.lines:
            key = (line.tax_rate, tax_category(line))
            net, tax = groups.get(key, (Decimal(0), Decimal(0)))
            groups[key] = (net + line.net_amount, tax + line.tax_amount)
        total = self.cac(root, "TaxTotal")
        self.amt(total, "TaxAmount", self.inv.totals.tax_amount)
        for (rate, code), (net, tax) in sorted(groups.items()):
            sub = self.cac(total, "TaxSubtotal")
            self.amt(sub, "TaxableAmount", net)
            self.amt(sub, "TaxAmount", tax)
            self.category(sub, "TaxCategory", code, rate)

    def monetary_total(self, root: ET.Element) -> None:
        t = self.inv.totals
        el = self.cac(root, "LegalMonetaryTotal")
        self.amt(el, "LineExtensionAmount", t.net_amount)
        self.amt(el, "TaxExclusiveAmount", t.net_amount)
        self.amt(el, "TaxInclusiveAmount", t.gross_amount)
        self.amt(el, "PayableAmount", t.gross_amount)

    def line(self, root: ET.Element, ubl: _UblLine) -> None:
        line, discount = ubl.line, ubl.discount
        el = self.cac(root, "CreditNoteLine" if self.credit else "InvoiceLine")
        self.cbc(el, "ID", str(line.line_no))
        quantity, price = self.quantity_and_price(line)
        qty = self.cbc(
            el, "CreditedQuantity" if self.credit else "InvoicedQuantity", format_plain(quantity)
        )
        qty.set("unitCode", unit_code(line.unit) if line.quantity is not None else "C62")
        net = line.net_amount + (discount.net_amount if discount is not None else 0)
        self.amt(el, "LineExtensionAmount", net)
        if discount is not None:
            charge = self.cac(el, "AllowanceCharge")
            self.cbc(charge, "ChargeIndicator", "false")
            self.cbc(charge, "AllowanceChargeReasonCode", "95")
            self.cbc(charge, "AllowanceChargeReason", "Discount")
            self.amt(charge, "Amount", -discount.net_amount)
        item = self.cac(el, "Item")
        self.cbc(item, "Name", line.name)
        classification = self.cac(item, "CommodityClassification")
        code = self.cbc(classification, "ItemClassificationCode", line.tax_code)
        code.set("listID", "ZZZ")
        code.set("listName", "CN tax classification code")
        self.category(item, "ClassifiedTaxCategory", tax_category(line), line.tax_rate)
        if line.spec:
            prop = self.cac(item, "AdditionalItemProperty")
            self.cbc(prop, "Name", "Specification")
            self.cbc(prop, "Value", line.spec)
        price_el = self.cac(el, "Price")
        amount = self.cbc(price_el, "PriceAmount", format_amount(price))
        amount.set("currencyID", self.inv.currency)

    def quantity_and_price(self, line: InvoiceLine) -> tuple[Decimal, Decimal]:
        """UBL quantity (sign-corrected) and net unit price (always >= 0)."""
        if line.quantity is None or line.unit_price is None or line.quantity.is_zero():
            return Decimal(1), abs(line.net_amount)
        quantity = line.quantity * self.sign
        if self.inv.price_basis is PriceBasis.TAX_EXCLUSIVE:
            return quantity, abs(line.unit_price)
        with localcontext(DECIMAL_CONTEXT):
            net_price = abs(line.net_amount / line.quantity)
            return quantity, net_price.quantize(_PRICE_PLACES, rounding=ROUND_HALF_UP)


def to_ubl(
    invoice: Invoice,
    *,
    issued_number: str | None = None,
    issue_date: date | None = None,
    country: str = "CN",
) -> bytes:
    """UTF-8 UBL 2.1 XML of `invoice` (Invoice for BLUE, CreditNote for RED).

    `issue_date` overrides the invoice's own; one of them is required because
    UBL has no "the platform decides" date.
    """
    issued_on = issue_date or invoice.issue_date
    if issued_on is None:
        raise UblError(invoice.serial, "UBL needs an issue date; pass issue_date=")
    if not invoice.lines:
        raise UblError(invoice.serial, "UBL needs at least one line")
    root = _Writer(invoice, country).document(issued_number or invoice.serial, issued_on)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data
