"""`syncd check-config`: validate the config, optionally against the live ERP and Kafka."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from syncd.commands import load_config_or_exit
from syncd.config import SyncdConfig

HELP = "validate the config (--live: also the ERP schema and the Kafka topics)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="syncd config YAML")
    parser.add_argument(
        "--live",
        action="store_true",
        help="also check tables/columns/types in the ERP database and that the topics exist",
    )
    parser.add_argument(
        "--format", choices=("yaml", "json"), default="yaml", help="resolved config output format"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the resolved config")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the database / broker"
    )


def check_database(config: SyncdConfig, timeout: float) -> tuple[list[str], list[str]]:
    """Schema problems (errors, warnings) of the ERP database against the config."""
    import sqlalchemy as sa

    from syncd.erp.lines import check_schema

    try:
        engine = sa.create_engine(
            config.database.dsn_value(),
            connect_args={"connect_timeout": max(1, int(timeout))},
            poolclass=sa.pool.NullPool,
        )
        with engine.connect() as connection:
            report = check_schema(connection, config)
        engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return [f"database {config.database.masked_dsn()}: cannot inspect: {reason}"], []
    return report.errors, report.warnings


def check_topics(config: SyncdConfig, timeout: float) -> tuple[list[str], list[str]]:
    """Every document topic must exist; a missing dead-letter topic is only a warning
    (the broker may auto-create it, or the deployment creates it)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf: dict[str, str | int | float | bool] = dict(config.kafka.client_config())
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return [f"kafka {config.kafka.bootstrap_servers}: cannot list topics: {exc}"], []
    existing = set(metadata.topics)
    errors = [
        f"documents.{doc.name}.topic: topic {doc.topic} does not exist (is the connector "
        "registered and its snapshot done? see `syncd connectors render`)"
        for doc in config.documents.values()
        if doc.topic not in existing
    ]
    warnings = []
    if config.kafka.dead_letter_topic not in existing:
        warnings.append(
            f"kafka.dead_letter_topic: topic {config.kafka.dead_letter_topic} does not exist yet"
        )
    return errors, warnings


def _render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, "check-config")
    errors: list[str] = []
    warnings: list[str] = []
    if args.live:
        for check in (check_database, check_topics):
            e, w = check(config, args.timeout)
            errors += e
            warnings += w
    if not args.quiet:
        sys.stdout.write(_render(config.masked_dump(), args.format))
    # Driver and broker messages may quote a DSN or a property: scrub every secret value.
    for warning in warnings:
        print(f"{args.config}: warning: {config.redact(warning)}", file=sys.stderr)
    for error in errors:
        print(f"{args.config}: {config.redact(error)}", file=sys.stderr)
    if errors:
        print(f"{args.config}: {len(errors)} problem(s)", file=sys.stderr)
        return 2
    print(f"{args.config}: OK" + (" (live)" if args.live else ""), file=sys.stderr)
    return 0
