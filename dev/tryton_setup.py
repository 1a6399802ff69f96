"""A Chinese company in a fresh Tryton database, set up through Tryton's own client (proteus).

Run by `dev/tryton.sh setup` with the Tryton virtualenv's python (never syncd's: proteus and
trytond live only there). Everything goes through Tryton's models and wizards, so the rows
are exactly what a Tryton user would create: the company in CNY, a fiscal year with its
invoice sequences, Tryton's minimal chart of accounts, VAT at 13 %, 9 % and 6 %, products
whose 19-digit tax classification code (税收分类编码) is a product identifier, and customers
whose unified social credit code is a party identifier of type `cn_vat` (Tryton's name
for the USCC).

Each step first looks for what it would create, so a second run changes nothing. Prints
one line per step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from decimal import Decimal
from typing import Any

from proteus import Model, Wizard  # type: ignore[import-not-found]
from proteus import config as proteus_config

COMPANY = "Acme Trading Co., Ltd."
COMPANY_USCC = "91310115MA1K4PLN89"
USCC_TYPE = "cn_vat"
#: (name, rate) of the VAT taxes (增值税) the company charges.
TAXES = (("VAT 13%", "0.13"), ("VAT 9%", "0.09"), ("VAT 6%", "0.06"))
#: (name, 19-digit tax classification code, VAT name, list price)
PRODUCTS = (
    ("Laptop computer", "1090511030000000000", "VAT 13%", "6000.00"),
    ("Printer paper A4", "1060301020100000000", "VAT 13%", "25.00"),
    ("Freight transport", "3010102020100000000", "VAT 9%", "300.00"),
    ("IT consulting", "3040201990000000000", "VAT 6%", "1200.00"),
)
#: (name, USCC, street, city)
CUSTOMERS = (
    ("Shanghai Bright Future Trading Co., Ltd.", "91310000MA1FL4T5X6", "88 Nanjing Rd", "Shanghai"),
    (
        "Beijing Northwind Technology Co., Ltd.",
        "91110108MA01R2HB6B",
        "5 Zhongguancun St",
        "Beijing",
    ),
    ("Hangzhou Westlake Foods Co., Ltd.", "91330106MA2CF8KL36", "12 Wensan Rd", "Hangzhou"),
)


def step(text: str) -> None:
    print(f"[tryton-setup] {text}", flush=True)


def activate(config: Any) -> None:
    modules = Model.get("ir.module", config=config)
    wanted = modules.find([("name", "in", ["account_invoice", "account_product"])])
    missing = [m for m in wanted if m.state != "activated"]
    if not missing:
        return
    modules.click(missing, "activate")
    Wizard("ir.module.activate_upgrade", config=config).execute("upgrade")
    step(f"activated {', '.join(m.name for m in missing)}")


def company(config: Any) -> Any:
    companies = Model.get("company.company", config=config)
    found = companies.find([("party.name", "=", COMPANY)])
    if found:
        return found[0]
    currencies = Model.get("currency.currency", config=config)
    found_cny = currencies.find([("code", "=", "CNY")])
    if found_cny:
        cny = found_cny[0]
    else:
        cny = currencies(name="Chinese Yuan Renminbi", code="CNY", symbol="¥", digits=2)
        cny.rounding = Decimal("0.01")
        cny.save()
    # Tryton files the unified social credit code as the party's tax identifier of type
    # `cn_vat` (python-stdnum's cn.uscc underneath).
    party = Model.get("party.party", config=config)(name=COMPANY)
    party.identifiers.new(type=USCC_TYPE, code=COMPANY_USCC)
    party.save()
    wizard = Wizard("company.company.config", config=config)
    wizard.execute("company")
    wizard.form.party = party
    wizard.form.currency = cny
    wizard.form.timezone = "Asia/Shanghai"
    wizard.execute("add")
    # The admin user now works for the new company: reload its context.
    users = Model.get("res.user", config=config)
    config._context = users.get_preferences(True, {})
    (result,) = companies.find([("party.name", "=", COMPANY)])
    step(f"company {COMPANY} (CNY)")
    return result


def allow_cancel(company: Any) -> None:
    """Let clerks cancel posted customer invoices (a company setting, off by default): the
    cancellation syncd reverses with a red invoice."""
    if not company.cancel_invoice_out:
        company.cancel_invoice_out = True
        company.save()
        step("posted customer invoices may be cancelled")


def fiscal_year(config: Any, company: Any) -> None:
    today = dt.date.today()
    years = Model.get("account.fiscalyear", config=config)
    if years.find([("name", "=", str(today.year))]):
        return
    strict = Model.get("ir.sequence.strict", config=config)
    types = Model.get("ir.sequence.type", config=config)
    (move_type,) = types.find([("name", "=", "Account Move")], limit=1)
    (invoice_type,) = types.find([("name", "=", "Invoice")], limit=1)
    year = years(name=str(today.year), company=company)
    year.start_date = dt.date(today.year, 1, 1)
    year.end_date = dt.date(today.year, 12, 31)
    year.move_sequence = strict(
        name=f"Moves {today.year}", sequence_type=move_type, company=company
    )
    year.move_sequence.save()
    numbers = strict(
        name=f"Invoices {today.year}",
        sequence_type=invoice_type,
        company=company,
        prefix=f"INV{today.year}-",
        padding=5,
    )
    numbers.save()
    (sequences,) = year.invoice_sequences
    sequences.out_invoice_sequence = numbers
    sequences.out_credit_note_sequence = numbers
    sequences.in_invoice_sequence = numbers
    sequences.in_credit_note_sequence = numbers
    year.save()
    year.click("create_period")
    step(f"fiscal year {year.name} with monthly periods")


def accounts(config: Any, company: Any) -> dict[str, Any]:
    account = Model.get("account.account", config=config)

    def one(domain: list[Any]) -> Any:
        found = account.find([*domain, ("company", "=", company.id), ("closed", "!=", True)])
        return found[0]

    def kinds() -> dict[str, Any]:
        return {
            "receivable": one([("type.receivable", "=", True)]),
            "payable": one([("type.payable", "=", True)]),
            "revenue": one([("type.revenue", "=", True)]),
            "expense": one([("type.expense", "=", True)]),
            "tax": one([("code", "=", "6.3.6")]),
        }

    if account.find([("company", "=", company.id)]):
        return kinds()
    data = Model.get("ir.model.data", config=config)
    templates = Model.get("account.account.template", config=config)
    chart = templates(data.get_id("account.account_template_root_en", config.context))
    wizard = Wizard("account.create_chart", config=config)
    wizard.execute("account")
    wizard.form.account_template = chart
    wizard.form.company = company
    wizard.execute("create_account")
    found = kinds()
    wizard.form.account_receivable = found["receivable"]
    wizard.form.account_payable = found["payable"]
    if hasattr(wizard.form, "category_account_revenue"):
        wizard.form.category_account_revenue = found["revenue"]
        wizard.form.category_account_expense = found["expense"]
    wizard.execute("create_properties")
    step("chart of accounts (Tryton's minimal chart)")
    return found


def taxes(config: Any, company: Any, found: dict[str, Any]) -> dict[str, Any]:
    tax = Model.get("account.tax", config=config)
    out: dict[str, Any] = {t.name: t for t in tax.find([("group.code", "=", "VAT")])}
    if out:
        return out
    groups = Model.get("account.tax.group", config=config)
    vat = groups(name="VAT", code="VAT", kind="sale")
    vat.save()
    for name, rate in TAXES:
        record = tax(name=name, description=f"增值税 {name[4:]}", company=company, group=vat)
        record.type = "percentage"
        record.rate = Decimal(rate)
        record.invoice_account = found["tax"]
        record.credit_note_account = found["tax"]
        record.save()
        out[name] = record
    step(f"VAT taxes {', '.join(name for name, _ in TAXES)}")
    return out


def products(config: Any, found: dict[str, Any], vat: dict[str, Any]) -> None:
    uom = Model.get("product.uom", config=config)
    (unit,) = uom.find([("name", "=", "Unit")])
    category = Model.get("product.category", config=config)
    template = Model.get("product.template", config=config)
    tax = Model.get("account.tax", config=config)
    for name, code, tax_name, price in PRODUCTS:
        if template.find([("name", "=", name)]):
            continue
        cat = category(name=f"Sales at {tax_name}", accounting=True)
        cat.account_revenue = found["revenue"]
        cat.account_expense = found["expense"]
        cat.customer_taxes.append(tax(vat[tax_name].id))  # a fresh instance per list
        cat.save()
        tmpl = template(name=name, default_uom=unit, type="service", account_category=cat)
        tmpl.list_price = Decimal(price)
        tmpl.save()
        (variant,) = tmpl.products
        variant.identifiers.new(code=code)  # no type: the 19-digit tax classification code
        variant.save()
    step(f"{len(PRODUCTS)} products with tax classification codes")


def customers(config: Any) -> None:
    party = Model.get("party.party", config=config)
    for name, code, street, city in CUSTOMERS:
        if party.find([("name", "=", name)]):
            continue
        record = party(name=name)
        record.identifiers.new(type=USCC_TYPE, code=code)
        (address,) = record.addresses
        address.street = street
        address.city = city
        record.save()
    step(f"{len(CUSTOMERS)} customers with USCC identifiers")


def payment_term(config: Any) -> None:
    terms = Model.get("account.invoice.payment_term", config=config)
    if terms.find([("name", "=", "Due on receipt")]):
        return
    term = terms(name="Due on receipt")
    term.lines.new(type="remainder")
    term.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="trytond.conf")
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    config = proteus_config.set_trytond(database=args.database, config_file=args.config)
    activate(config)
    created = company(config)
    allow_cancel(created)
    fiscal_year(config, created)
    found = accounts(config, created)
    vat = taxes(config, created, found)
    products(config, found, vat)
    customers(config)
    payment_term(config)
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
