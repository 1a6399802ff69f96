"""`syncd connectors render`: the Debezium connector JSON derived from the config."""

from __future__ import annotations

import argparse
import json
import sys

from syncd.commands import load_config_or_exit
from syncd.debezium.connector import render

HELP = "Debezium connector configs derived from the syncd config"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="connectors_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "render",
        help="print the Kafka Connect REST body {name, config} for the configured tables",
        description="Print the Debezium Postgres connector JSON (REST body {name, config}) "
        "derived from the config; connectors/*.json are generated with it.",
    )
    p.add_argument("-c", "--config", required=True, help="syncd config YAML")
    p.add_argument("--name", help="connector name (default: connector.name of the config)")


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, "connectors")
    body = render(config, args.name)
    sys.stdout.write(json.dumps(body, indent=2) + "\n")
    return 0
