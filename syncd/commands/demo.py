"""`syncd demo generate`: put demo orders through the running daemon and check the result."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "demo load: create, confirm and cancel demo orders; verify exactly-once at the end"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    g = sub.add_parser(
        "generate",
        help="create demo orders in the ERP and wait until they are invoiced",
        description="Create demo sales orders (DRAFT, then CONFIRMED), cancel a share once "
        "invoiced, re-issue and return a share, then check the ERP and the sandbox audit: "
        "exit 1 if an invoice is missing or issued twice after --timeout. Needs the demo "
        "schema (config/demo/erp.sql).",
    )
    g.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    g.add_argument("--orders", type=int, required=True, metavar="N", help="orders to create")
    g.add_argument(
        "--cancel-ratio",
        type=float,
        default=0.1,
        metavar="R",
        help="share of the invoiced orders to cancel (default 0.1)",
    )
    g.add_argument(
        "--return-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="share of the valid orders whose first line is returned in parts, each part a "
        "partial red invoice (needs returns in the config; default 0)",
    )
    g.add_argument(
        "--reissue-ratio",
        type=float,
        default=0.0,
        metavar="R",
        help="share of the valid orders cancelled and confirmed again: a red invoice, then a "
        "second blue one (needs reissues in the config; default 0)",
    )
    g.add_argument(
        "--invalid-ratio",
        type=float,
        default=0.05,
        metavar="R",
        help="share with an invalid buyer tax ID on a SPECIAL invoice (default 0.05)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed; order numbers are DEMO-<seed>-<n> (default: from the clock)",
    )
    g.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="R",
        help="orders confirmed per second (default 0: as fast as possible)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for invoicing after the last order (default 300)",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON (progress still goes to stderr)",
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit
    from syncd.demo.generate import DemoRun, DemoSetupError, build_orders, order_prefix

    config = load_config_or_exit(args.config, "demo")
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    try:
        orders = build_orders(
            args.orders,
            seed=seed,
            invalid_ratio=args.invalid_ratio,
            cancel_ratio=args.cancel_ratio,
            return_ratio=args.return_ratio,
            reissue_ratio=args.reissue_ratio,
        )
    except ValueError as exc:
        print(f"syncd demo: {exc}", file=sys.stderr)
        return 2
    progress = sys.stderr if args.json else sys.stdout
    print(
        f"[demo] {len(orders)} orders {order_prefix(seed)}* (seed {seed}): "
        f"{sum(o.invalid for o in orders)} with an invalid buyer tax ID, "
        f"{sum(o.cancel_reason is not None and not o.reissue for o in orders)} to cancel "
        f"once invoiced, {sum(o.reissue for o in orders)} to re-issue, "
        f"{sum(bool(o.returns) for o in orders)} to return in part; "
        f"platform {config.primary_issuer.base_url}",
        file=progress,
    )
    try:
        summary = DemoRun(
            config,
            orders,
            prefix=order_prefix(seed),
            rate=args.rate,
            timeout=args.timeout,
            out=progress,
        ).run()
    except DemoSetupError as exc:
        print(f"syncd demo: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(summary.render())
    return 0 if summary.ok else 1
