"""Drive Tryton's own invoice workflow through proteus: post, cancel and credit customer invoices.

Run with the Tryton virtualenv's python (`$(dev/tryton.sh python)`), never syncd's. Tests and
the demo use it to make Tryton write its tables the way a clerk would -- syncd only ever sees
the result through Debezium. Each command prints one JSON object per invoice on stdout.

    tryton_invoices.py --config C --database D post --customer 0 --line "Laptop computer:2" \
        [--line "IT consulting:1:1500.00"] [--note "a comment line"] [--count N]
    tryton_invoices.py ... cancel ID [ID ...]       # posted -> cancelled (Tryton's cancel)
    tryton_invoices.py ... credit ID [ID ...]       # a posted credit note for each invoice
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from proteus import Model, Wizard  # type: ignore[import-not-found]
from proteus import config as proteus_config


def _customer(config: Any, which: str) -> Any:
    party = Model.get("party.party", config=config)
    if which.isdigit():
        customers = party.find(
            [("identifiers.type", "=", "cn_vat"), ("name", "!=", "Acme Trading Co., Ltd.")],
            order=[("id", "ASC")],
        )
        return customers[int(which) % len(customers)]
    (found,) = party.find([("name", "=", which)])
    return found


#: the Chinese company's time zone (set by dev/tryton_setup.py)
COMPANY_ZONE = ZoneInfo("Asia/Shanghai")


def post(config: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    invoice_model = Model.get("account.invoice", config=config)
    product_model = Model.get("product.product", config=config)
    terms = Model.get("account.invoice.payment_term", config=config)
    (term,) = terms.find([("name", "=", "Due on receipt")])
    out = []
    for _ in range(args.count):
        invoice = invoice_model(type="out")
        invoice.party = _customer(config, args.customer)
        invoice.payment_term = term
        # the company's day (Asia/Shanghai, dev/tryton_setup.py), not the machine's: from
        # 16:00 UTC Tryton's today is already tomorrow, and a due date of the UTC day is
        # refused as "in the past"
        invoice.invoice_date = dt.datetime.now(COMPANY_ZONE).date()
        for spec in args.line:
            name, quantity, *price = spec.split(":")
            (product,) = product_model.find([("template.name", "=", name)])
            line = invoice.lines.new()
            line.product = product
            line.quantity = Decimal(quantity)
            line.unit_price = Decimal(price[0]) if price else product.template.list_price
        for note in args.note:
            line = invoice.lines.new(type="comment")
            line.description = note
        invoice.click("post")
        out.append({"id": invoice.id, "number": invoice.number, "state": invoice.state})
    return out


def cancel(config: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    invoice_model = Model.get("account.invoice", config=config)
    out = []
    for ident in args.ids:
        invoice = invoice_model(ident)
        invoice.click("cancel")
        out.append({"id": invoice.id, "number": invoice.number, "state": invoice.state})
    return out


def credit(config: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    invoice_model = Model.get("account.invoice", config=config)
    out = []
    for ident in args.ids:
        wizard = Wizard("account.invoice.credit", [invoice_model(ident)], config=config)
        wizard.form.with_refund = False
        wizard.execute("credit")
        original = invoice_model(ident)
        origins = {line.id for line in original.lines}
        drafts = invoice_model.find(
            [("state", "=", "draft"), ("party", "=", original.party.id)], order=[("id", "DESC")]
        )
        note = next(
            d for d in drafts if any(line.origin and line.origin.id in origins for line in d.lines)
        )
        note.invoice_date = dt.datetime.now(COMPANY_ZONE).date()
        note.click("post")
        out.append({"id": note.id, "number": note.number, "state": note.state, "credits": ident})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--database", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("post")
    p.add_argument("--customer", default="0")
    p.add_argument("--line", action="append", default=[])
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--count", type=int, default=1)
    for name in ("cancel", "credit"):
        sub.add_parser(name).add_argument("ids", nargs="+", type=int)
    args = parser.parse_args(argv)
    config = proteus_config.set_trytond(database=args.database, config_file=args.config)
    command = {"post": post, "cancel": cancel, "credit": credit}[args.command]
    for item in command(config, args):
        print(json.dumps(item), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
