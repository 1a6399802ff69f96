import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from syncd.invoice.model import Invoice, InvoiceType, PriceBasis, TaxPolicy
from syncd.invoice.ubl import CUSTOMIZATION_ID, UblError, to_ubl, unit_code
from tests.unit.invoice_samples import (
    BLUE_NO,
    blue,
    buyer,
    line,
    multi_rate,
    red_of,
    with_discount,
)

D = Decimal

NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
}
INCL = PriceBasis.TAX_INCLUSIVE


def shared_dir() -> Path:
    override = os.environ.get("SYNCD_SHARED_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3].parent / "shared"


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    maindoc = shared_dir() / "schemas" / "ubl-2.1" / "maindoc"
    result = {}
    documents = (("Invoice", "UBL-Invoice-2.1.xsd"), ("CreditNote", "UBL-CreditNote-2.1.xsd"))
    for root, name in documents:
        path = maindoc / name
        if not path.is_file():
            pytest.fail(
                f"UBL 2.1 schema not found at {path}: the official OASIS XSDs live in the "
                "shared folder next to the repository (set SYNCD_SHARED_DIR to point elsewhere)"
            )
        result[root] = etree.XMLSchema(etree.parse(str(path)))
    return result


def render(invoice: Invoice, **kwargs) -> etree._Element:
    return etree.fromstring(to_ubl(invoice, **kwargs))


def assert_schema_valid(schemas, doc: etree._Element) -> None:
    schema = schemas[etree.QName(doc).localname]
    assert schema.validate(doc), schema.error_log


def natural_person_invoice() -> Invoice:
    person = buyer(tax_id=None, natural_person=True, name="张三", email=None)
    return blue(buyer=person, invoice_type=InvoiceType.ORDINARY)


def no_quantity_invoice() -> Invoice:
    invoice = blue()
    ln = invoice.lines[0].model_copy(update={"quantity": None, "unit_price": None})
    return invoice.model_copy(update={"lines": (ln,)})


CASES = {
    "blue": blue,
    "red": lambda: red_of(blue()),
    "multi_rate": multi_rate,
    "red_multi_rate": lambda: red_of(multi_rate()),
    "discount": with_discount,
    "discount_inclusive": lambda: with_discount(INCL),
    "red_discount_inclusive": lambda: red_of(with_discount(INCL)),
    "tax_inclusive": lambda: blue(
        [line("x", "1", "180.00", "0.09"), line("y", "3", "1.00", "0.13", unit="kg")], basis=INCL
    ),
    "natural_person": natural_person_invoice,
    "no_quantity": no_quantity_invoice,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_xml_is_valid_against_the_ubl_2_1_xsd(schemas, name):
    invoice = CASES[name]()
    assert_schema_valid(schemas, render(invoice, issue_date=date(2026, 11, 28)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_en16931_arithmetic_holds(name):
    doc = render(CASES[name](), issue_date=date(2026, 11, 28))

    def amount(el, path):
        return D(el.findtext(path, namespaces=NS))

    lines = doc.findall("cac:InvoiceLine", NS) + doc.findall("cac:CreditNoteLine", NS)
    total = doc.find("cac:LegalMonetaryTotal", NS)
    assert sum(amount(ln, "cbc:LineExtensionAmount") for ln in lines) == amount(
        total, "cbc:LineExtensionAmount"
    )  # BR-CO-10
    tax = amount(doc, "cac:TaxTotal/cbc:TaxAmount")
    assert amount(total, "cbc:TaxExclusiveAmount") + tax == amount(
        total, "cbc:TaxInclusiveAmount"
    )  # BR-CO-15
    subtotals = doc.findall("cac:TaxTotal/cac:TaxSubtotal", NS)
    assert sum(amount(s, "cbc:TaxAmount") for s in subtotals) == tax  # BR-CO-14
    for ln in lines:
        qty = D(
            ln.findtext("cbc:InvoicedQuantity", namespaces=NS)
            or ln.findtext("cbc:CreditedQuantity", namespaces=NS)
        )
        price = amount(ln, "cac:Price/cbc:PriceAmount")
        allowances = sum(amount(a, "cbc:Amount") for a in ln.findall("cac:AllowanceCharge", NS))
        assert abs(qty * price - allowances - amount(ln, "cbc:LineExtensionAmount")) <= D(
            "0.02"
        )  # PEPPOL-EN16931-R120
        assert qty > 0 and price >= 0
    for el in doc.iter():
        if el.get("currencyID") is not None:
            assert el.get("currencyID") == "CNY"
            assert D(el.text) >= 0 or el.tag.endswith("LineExtensionAmount")


def test_blue_is_an_invoice_380_with_header_fields():
    doc = render(blue())
    assert etree.QName(doc).localname == "Invoice"
    assert doc.findtext("cbc:CustomizationID", namespaces=NS) == CUSTOMIZATION_ID
    assert doc.findtext("cbc:InvoiceTypeCode", namespaces=NS) == "380"
    assert doc.findtext("cbc:ID", namespaces=NS) == "SX3F7Q2M9KD4HT6W1B8N5C0RJA"
    assert doc.findtext("cbc:IssueDate", namespaces=NS) == "2026-11-27"
    assert doc.findtext("cbc:DocumentCurrencyCode", namespaces=NS) == "CNY"
    supplier = "cac:AccountingSupplierParty/cac:Party/"
    assert (
        doc.findtext(supplier + "cac:PartyTaxScheme/cbc:CompanyID", namespaces=NS)
        == "91310115MA1K4PLN89"
    )
    assert (
        doc.findtext(supplier + "cac:PartyLegalEntity/cbc:RegistrationName", namespaces=NS)
        == "Acme Trading Co., Ltd."
    )
    customer = "cac:AccountingCustomerParty/cac:Party/"
    assert (
        doc.findtext(customer + "cac:PartyTaxScheme/cbc:CompanyID", namespaces=NS)
        == "91110108MA01ABCD2H"
    )
    assert doc.findtext("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS) == "180.00"
    ln = doc.find("cac:InvoiceLine", NS)
    assert ln.find("cbc:InvoicedQuantity", NS).get("unitCode") == "HUR"
    assert ln.findtext("cbc:LineExtensionAmount", namespaces=NS) == "165.14"
    assert (
        ln.findtext(
            "cac:Item/cac:CommodityClassification/cbc:ItemClassificationCode", namespaces=NS
        )
        == "3040201000000000000"
    )
    assert ln.findtext("cac:Item/cac:ClassifiedTaxCategory/cbc:ID", namespaces=NS) == "S"
    assert ln.findtext("cac:Item/cac:ClassifiedTaxCategory/cbc:Percent", namespaces=NS) == "9"


def test_issued_number_replaces_the_serial_as_id():
    doc = render(blue(), issued_number="26312000000000000099")
    assert doc.findtext("cbc:ID", namespaces=NS) == "26312000000000000099"


def test_red_is_a_credit_note_381_with_positive_amounts_and_billing_reference():
    doc = render(red_of(blue()), issue_date=date(2026, 12, 1))
    assert etree.QName(doc).localname == "CreditNote"
    assert doc.findtext("cbc:CreditNoteTypeCode", namespaces=NS) == "381"
    assert (
        doc.findtext("cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID", namespaces=NS)
        == BLUE_NO
    )
    assert doc.findtext("cac:DiscrepancyResponse/cbc:Description", namespaces=NS) == "Sales return"
    assert doc.findtext("cac:LegalMonetaryTotal/cbc:PayableAmount", namespaces=NS) == "180.00"
    ln = doc.find("cac:CreditNoteLine", NS)
    assert ln.findtext("cbc:CreditedQuantity", namespaces=NS) == "2"
    assert ln.findtext("cac:Price/cbc:PriceAmount", namespaces=NS) == "82.57"


def test_tax_subtotal_per_category_and_rate():
    doc = render(multi_rate())
    found = [
        (
            s.findtext("cac:TaxCategory/cbc:ID", namespaces=NS),
            s.findtext("cac:TaxCategory/cbc:Percent", namespaces=NS),
            s.findtext("cbc:TaxableAmount", namespaces=NS),
        )
        for s in doc.findall("cac:TaxTotal/cac:TaxSubtotal", NS)
    ]
    assert found == [
        ("E", "0", "125.00"),
        ("O", None, "20.00"),
        ("Z", "0", "299.97"),
        ("S", "6", "1000.00"),
        ("S", "9", "165.14"),
        ("S", "13", "421.44"),
    ]
    assert len(doc.findall("cac:TaxTotal", NS)) == 1


def test_discount_pair_becomes_one_line_with_an_allowance():
    doc = render(with_discount())
    lines = doc.findall("cac:InvoiceLine", NS)
    assert [ln.findtext("cbc:ID", namespaces=NS) for ln in lines] == ["1", "3"]
    first = lines[0]
    assert first.findtext("cbc:LineExtensionAmount", namespaces=NS) == "14697.00"
    assert first.findtext("cac:AllowanceCharge/cbc:ChargeIndicator", namespaces=NS) == "false"
    assert first.findtext("cac:AllowanceCharge/cbc:Amount", namespaces=NS) == "300.00"
    assert first.find("cbc:InvoicedQuantity", NS).get("unitCode") == "H87"  # 台


def test_tax_inclusive_price_is_the_net_unit_price():
    doc = render(blue([line("x", "3", "1.00", "0.13")], basis=INCL))
    ln = doc.find("cac:InvoiceLine", NS)
    assert ln.findtext("cbc:LineExtensionAmount", namespaces=NS) == "2.65"
    assert ln.findtext("cac:Price/cbc:PriceAmount", namespaces=NS) == "0.88333333"


def test_exempt_and_not_taxable_carry_a_reason():
    doc = render(blue([line(rate="0", tax_policy=TaxPolicy.EXEMPT)]))
    assert (
        doc.findtext(
            "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:TaxExemptionReason", namespaces=NS
        )
        == "Exempt from VAT"
    )


def test_natural_person_without_tax_id_has_no_tax_scheme():
    doc = render(natural_person_invoice())
    party = doc.find("cac:AccountingCustomerParty/cac:Party", NS)
    assert party.find("cac:PartyTaxScheme", NS) is None
    assert party.findtext("cac:PartyLegalEntity/cbc:RegistrationName", namespaces=NS) == "张三"


def test_an_issue_date_is_required():
    with pytest.raises(UblError, match="needs an issue date"):
        to_ubl(blue(issue_date=None))
    assert (
        render(blue(issue_date=None), issue_date=date(2026, 11, 30)).findtext(
            "cbc:IssueDate", namespaces=NS
        )
        == "2026-11-30"
    )


def test_an_invoice_without_lines_cannot_be_rendered():
    with pytest.raises(UblError, match="at least one line"):
        to_ubl(blue().model_copy(update={"lines": ()}))


def test_orphan_discount_line_cannot_be_rendered():
    invoice = with_discount()
    broken = invoice.model_copy(update={"lines": invoice.lines[1:]})
    with pytest.raises(UblError, match="discount line without its line"):
        to_ubl(broken)


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("hour", "HUR"),
        ("小时", "HUR"),
        ("kg", "KGM"),
        ("千克", "KGM"),
        ("个", "H87"),
        ("Pcs", "H87"),
        ("套", "SET"),
        ("月", "MON"),
        ("m²", "MTK"),
        ("widget", "C62"),
        (None, "C62"),
    ],
)
def test_unit_codes(unit, code):
    assert unit_code(unit) == code
