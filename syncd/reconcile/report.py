"""Render a reconciliation report: a table for people, CSV for a spreadsheet, JSON for
scripts. Pure: a `Report` in, text out. Amounts are printed from their `Decimal`s as
they are (never through float), so the figures a spreadsheet sums are the ledger's."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

from syncd.reconcile.compare import Amounts, Exception_, ExceptionClass, Report

#: CSV columns, one row per exception.
CSV_FIELDS = (
    "class",
    "document_type",
    "key",
    "serial",
    "invoice_nos",
    "state",
    "ledger_net",
    "ledger_tax",
    "ledger_gross",
    "platform_net",
    "platform_tax",
    "platform_gross",
    "detail",
)


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _amounts_dict(a: Amounts | None) -> dict[str, str] | None:
    if a is None:
        return None
    return {"net": _money(a.net), "tax": _money(a.tax), "gross": _money(a.gross)}


def exception_dict(e: Exception_) -> dict[str, Any]:
    return {
        "class": e.cls.value,
        "document_type": e.document_type,
        "key": e.key,
        "serial": e.serial,
        "invoice_nos": list(e.invoice_nos),
        "state": e.state,
        "ledger": _amounts_dict(e.ledger),
        "platform": _amounts_dict(e.platform),
        "detail": e.detail,
    }


def to_json(report: Report, *, exit_code: int) -> str:
    classes = report.by_class()
    data = {
        "ok": True,
        "clean": report.clean,
        "exit_code": exit_code,
        "period": {
            "from": report.period_start.isoformat(),
            "to": report.period_end.isoformat(),
        },
        "documents": report.documents,
        "platform_invoices": report.platform_invoices,
        "exceptions_total": len(report.exceptions),
        "classes": {
            c.value: {"count": t.count, **(_amounts_dict(t.amounts) or {})}
            for c, t in classes.items()
        },
        "states": {
            label: {"count": report.state_counts.get(label, 0), **(_amounts_dict(a) or {})}
            for label, a in sorted(_states(report).items())
        },
        "exceptions": [exception_dict(e) for e in report.exceptions],
    }
    return json.dumps(data, indent=2) + "\n"


def _states(report: Report) -> dict[str, Amounts]:
    return {label: report.by_state.get(label, Amounts()) for label in report.state_counts}


def to_csv(report: Report) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for e in report.exceptions:
        led, plat = e.ledger, e.platform
        w.writerow(
            [
                e.cls.value,
                e.document_type or "",
                e.key or "",
                e.serial or "",
                " ".join(e.invoice_nos),
                e.state or "",
                _money(led.net if led else None),
                _money(led.tax if led else None),
                _money(led.gross if led else None),
                _money(plat.net if plat else None),
                _money(plat.tax if plat else None),
                _money(plat.gross if plat else None),
                e.detail,
            ]
        )
    return out.getvalue()


def _row(cells: list[str], widths: list[int], right: set[int]) -> str:
    parts = [
        c.rjust(w) if i in right else c.ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(parts).rstrip()


def _grid(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [_row(header, widths, right), *(_row(r, widths, right) for r in rows)]


def to_table(report: Report) -> str:
    lines = [
        f"reconciliation {report.period_start.isoformat()} .. {report.period_end.isoformat()} "
        f"(end exclusive): {report.documents} document(s), "
        f"{report.platform_invoices} platform invoice(s)",
        "",
        "exceptions by class",
    ]
    classes = report.by_class()
    lines += _grid(
        ["class", "count", "net", "tax", "gross"],
        [
            [
                c.value,
                str(t.count),
                _money(t.amounts.net),
                _money(t.amounts.tax),
                _money(t.amounts.gross),
            ]
            for c, t in classes.items()
        ],
        {1, 2, 3, 4},
    )
    lines += ["", "ledger amounts by state"]
    states = _states(report)
    lines += _grid(
        ["kind/state", "count", "net", "tax", "gross"],
        [
            [label, str(report.state_counts[label]), _money(a.net), _money(a.tax), _money(a.gross)]
            for label, a in sorted(states.items())
        ],
        {1, 2, 3, 4},
    )
    if report.exceptions:
        lines += ["", "exceptions"]
        lines += _grid(
            ["class", "document", "key", "serial", "invoice(s)", "state", "gross", "detail"],
            [
                [
                    e.cls.value,
                    e.document_type or "-",
                    e.key or "-",
                    e.serial or "-",
                    " ".join(e.invoice_nos) or "-",
                    e.state or "-",
                    _money(e.amounts().gross),
                    e.detail,
                ]
                for e in report.exceptions
            ],
            {6},
        )
        lines += ["", f"{len(report.exceptions)} exception(s)"]
    else:
        lines += ["", "clean: no exceptions"]
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: str, *, exit_code: int) -> str:
    if fmt == "json":
        return to_json(report, exit_code=exit_code)
    if fmt == "csv":
        return to_csv(report)
    return to_table(report)


__all__ = [
    "CSV_FIELDS",
    "ExceptionClass",
    "exception_dict",
    "render",
    "to_csv",
    "to_json",
    "to_table",
]
