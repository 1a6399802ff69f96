"""The exactly-once summary of a Tryton demo run, read from Tryton's tables, the side table,
syncd's ledger and the sandbox platform; waits (up to --deadline seconds) for it to settle.

    tryton_summary.py -c config/tryton.yaml --sandbox URL --posted 6,7,8 --cancelled 6 \
        --credited 7

Expected: every posted customer invoice has exactly one blue invoice (side table ISSUED, or
REVERSED with a red number when it was cancelled); every cancelled one exactly one red
invoice; every posted credit note exactly one red invoice of its own, referencing the blue
invoice of the invoice it credits (its side-table row holds the red number; the credited
invoice stays ISSUED); no serial twice at the platform. Prints the counts and
`result: OK` (exit 0) or `result: FAIL` with what differs (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections import Counter

import sqlalchemy as sa

from syncd.config import load_config


def _ids(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _check(
    engine: sa.Engine, args: argparse.Namespace, table: str
) -> tuple[list[str], dict[str, int]]:
    posted, cancelled, credited = set(args.posted), set(args.cancelled), set(args.credited)
    with engine.connect() as conn:
        side = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                sa.text(f"SELECT id, status, invoice_no, red_invoice_no FROM {table}")  # noqa: S608
            )
        }
        ledger = conn.execute(
            sa.text(
                "SELECT source_key, kind, state, serial FROM syncd.documents "
                "WHERE document_type = 'customer_invoice'"
            )
        ).all()
        # each posted credit note and the invoice its lines credit (origin: 'model,id')
        notes = conn.execute(
            sa.text(
                "SELECT DISTINCT n.id, o.invoice FROM account_invoice n "
                "JOIN account_invoice_line l ON l.invoice = n.id "
                "JOIN account_invoice_line o ON l.origin = 'account.invoice.line,' || o.id "
                "WHERE n.sequence_type_cache = 'credit_note' AND n.type = 'out' "
                "AND n.state IN ('posted', 'paid')"
            )
        ).all()
    with urllib.request.urlopen(f"{args.sandbox}/_sandbox/invoices", timeout=10) as reply:  # noqa: S310
        platform = json.load(reply)["invoices"]
    ours = {s for _k, _kind, _state, s in ledger}
    serials = Counter(i["serial"] for i in platform)
    problems = [f"serial {s} issued {n} times" for s, n in serials.items() if n > 1]
    for ident in sorted(posted):
        want = "REVERSED" if ident in cancelled else "ISSUED"
        got = side.get(ident)
        if got is None or got[0] != want or got[1] is None:
            problems.append(f"invoice {ident}: side table {got}, expected {want}")
        elif want == "REVERSED" and got[2] is None:
            problems.append(f"invoice {ident}: reversed without a red invoice number")
    reds_of = Counter(
        i["original_invoice_no"] for i in platform if i["kind"] == "RED" and i["serial"] in ours
    )
    credited_notes = 0
    for note, original in notes:
        got = side.get(note)
        blue_no = (side.get(original) or (None, None, None))[1]
        if got is None or got[2] is None:
            problems.append(f"credit note {note}: side table {got}, expected a red invoice number")
        elif got[1] is not None and got[1] != got[2]:
            problems.append(f"credit note {note} was issued as a blue invoice ({got[1]})")
        elif original not in cancelled and reds_of[blue_no] != 1:
            problems.append(
                f"credit note {note}: {reds_of[blue_no]} red invoices reference invoice "
                f"{original} ({blue_no}), expected 1"
            )
        elif original in credited:  # this run's (the database keeps earlier runs')
            credited_notes += 1
    ours_notes = sum(1 for _note, original in notes if original in credited)
    if ours_notes < len(credited):
        problems.append(f"{ours_notes} posted credit notes of {len(credited)} credited invoices")
    keys = Counter(
        (json.loads(k)["id"], kind) for k, kind, _state, _serial in ledger if k.startswith("{")
    )
    problems += [f"ledger: {k} twice" for k, n in keys.items() if n > 1]
    counts = {
        "posted": len(posted),
        "cancelled": len(cancelled),
        "credited": len(credited),
        "blue issued": sum(1 for i in posted if side.get(i, ("",))[0] in ("ISSUED", "REVERSED")),
        "red issued": sum(1 for i in cancelled if (side.get(i) or ("", None, None))[2]),
        "credit notes as red invoices": credited_notes,
        "platform invoices, all runs": sum(1 for i in platform if i["serial"] in ours),
    }
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--posted", type=_ids, default=[])
    parser.add_argument("--cancelled", type=_ids, default=[])
    parser.add_argument("--credited", type=_ids, default=[])
    parser.add_argument("--deadline", type=float, default=180.0)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    doc = config.documents["customer_invoice"]
    engine = sa.create_engine(config.database.dsn_value(), poolclass=sa.pool.NullPool)
    until = time.monotonic() + args.deadline
    problems: list[str] = []
    counts: dict[str, int] = {}
    while True:
        problems, counts = _check(engine, args, doc.write_back_table)
        if not problems or time.monotonic() > until:
            break
        time.sleep(2)
    for name, value in counts.items():
        print(f"[tryton-demo] {name:34} {value}")
    for problem in problems:
        print(f"[tryton-demo] PROBLEM {problem}")
    print("result: OK" if not problems else "result: FAIL")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
