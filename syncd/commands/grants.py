"""`syncd grants -c CONFIG`: the database roles and the exact GRANT script for this config."""

from __future__ import annotations

import argparse
import sys

HELP = "print the database roles and GRANT script the config needs (least privilege)"


def register(parser: argparse.ArgumentParser) -> None:
    from syncd.ledger.privileges import RoleNames

    names = RoleNames()
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument("--json", action="store_true", help="the grants as JSON, with reasons")
    parser.add_argument(
        "--people",
        action="store_true",
        help="also the roles for people: read-only, operator, approver",
    )
    parser.add_argument("--owner", default=names.owner, help="owner role (runs migrations)")
    parser.add_argument("--runtime", default=names.runtime, help="runtime role (the daemon)")
    parser.add_argument("--readonly", default=names.readonly, help="read-only people's role")
    parser.add_argument("--operator", default=names.operator, help="operators' role")
    parser.add_argument("--approver", default=names.approver, help="approvers' role")


def run(args: argparse.Namespace) -> int:
    from syncd.commands import EXIT_USAGE, emit_json, fail, load_config_or_exit
    from syncd.ledger.privileges import RoleNames, render_json, render_sql

    config = load_config_or_exit(args.config, "grants")
    names = RoleNames(args.owner, args.runtime, args.readonly, args.operator, args.approver)
    given = [names.owner, names.runtime]
    if args.people:
        given += [names.readonly, names.operator, names.approver]
    if len(set(given)) != len(given):
        return fail("grants", EXIT_USAGE, "each role needs its own name")
    if args.json:
        emit_json(render_json(config, names, people=args.people))
    else:
        sys.stdout.write(render_sql(config, names, people=args.people, source=args.config))
    return 0
