"""`syncd check-config`: validate the config, optionally against the live ERP and Kafka."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from syncd.commands import load_config_or_exit
from syncd.config import SyncdConfig
from syncd.config.settings import IssuerSettings

HELP = "validate the config (--live: also the ERP schema, the Kafka topics, the issuer's TLS)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="syncd config YAML")
    parser.add_argument(
        "--live",
        action="store_true",
        help="also check tables/columns/types in the ERP database, that the topics exist, "
        "and the TLS handshake with the issuer",
    )
    parser.add_argument(
        "--format", choices=("yaml", "json"), default="yaml", help="resolved config output format"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the resolved config")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the database / broker"
    )


@dataclass(slots=True)
class LiveCheck:
    """What one live check found: problems, warnings, and its dependency if unreachable
    (dependency -> the one line that says so)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)


def check_database(config: SyncdConfig, timeout: float) -> LiveCheck:
    """Schema problems of the ERP database against the config, or that it is unreachable."""
    import sqlalchemy as sa

    from syncd.commands import DATABASE, database_reason, database_unreachable
    from syncd.commands import is_connection_error as unreachable
    from syncd.erp.lines import check_schema

    engine = sa.create_engine(
        config.database.dsn_value(),
        connect_args={"connect_timeout": max(1, int(timeout))},
        poolclass=sa.pool.NullPool,
    )
    from syncd.ledger.privileges import live_report

    found = LiveCheck()
    try:
        with engine.connect() as connection:
            # The role syncd connects as, against what the daemon needs: a missing
            # privilege is an error, an excess one (it could wipe the audit trail or
            # change ERP columns it never writes) a warning per privilege. First, so a
            # role that cannot even read the tables still learns what it lacks.
            privileges = live_report(connection, config)
            found.errors += privileges.missing
            found.warnings += [_excess(line) for line in privileges.excess]
            found.warnings += privileges.unchecked
        with engine.connect() as connection:
            report = check_schema(connection, config)
            found.errors += report.errors
            found.warnings += report.warnings
    except sa.exc.DBAPIError as exc:
        if unreachable(exc):
            return LiveCheck(unreachable={DATABASE: database_unreachable(config, exc)})
        reason = database_reason(exc)
        found.errors.append(f"database.dsn: cannot inspect the database: {reason}")
    finally:
        engine.dispose()
    return found


def _excess(line: str) -> str:
    key, _, rest = line.partition(": ")
    return f"{key}: excess privilege: {rest}"


def check_topics(config: SyncdConfig, timeout: float) -> LiveCheck:
    """Every document topic must exist; a missing dead-letter topic is only a warning
    (the broker may auto-create it, or the deployment creates it); or the brokers are
    unreachable."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from syncd.commands import KAFKA, is_kafka_unreachable, kafka_reason, kafka_unreachable
    from syncd.kafka.client import operator_config

    conf = operator_config(config.kafka, client_id="syncd-check-config", timeout=timeout)
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        if is_kafka_unreachable(exc):
            admin.poll(0)  # serves the queued error callbacks: the connection's reason
            cause = conf["error_cb"].reason
            return LiveCheck(unreachable={KAFKA: kafka_unreachable(config, exc, cause)})
        return LiveCheck([f"kafka.bootstrap_servers: cannot list topics: {kafka_reason(exc)}"])
    existing = set(metadata.topics)
    errors = [
        f"documents.{doc.name}.topic: topic {doc.topic} does not exist (is the connector "
        "registered and its snapshot done? see `syncd connectors render`)"
        for doc in config.documents.values()
        if doc.topic not in existing
    ]
    # A return table's topic appears at its first change; a daemon started before then
    # notices it only at its next metadata refresh (minutes): create it up front.
    warnings = [
        f"documents.{doc.name}.returns.topic: topic {doc.returns.topic} does not exist yet; "
        "create it before starting the daemon, or returns wait for its metadata refresh"
        for doc in config.documents.values()
        if doc.returns is not None and doc.returns.topic not in existing
    ]
    if config.kafka.dead_letter_topic not in existing:
        warnings.append(
            f"kafka.dead_letter_topic: topic {config.kafka.dead_letter_topic} does not exist yet"
        )
    return LiveCheck(errors, warnings)


def check_issuer(config: SyncdConfig, timeout: float) -> LiveCheck:
    """A TCP and (for https://) TLS handshake with the issuer of every account, with
    exactly the trust settings the daemon uses (`ca_file`, the client certificate). A
    handshake the verification refuses is a problem of the config (exit 2: wrong CA, wrong
    host name). A platform that does not answer at all is not reported: this checks the
    trust settings, not the platform's uptime (which the daemon's retries are for)."""
    errors: list[str] = []
    for name, account in config.accounts().items():
        prefix = "issuer" if config.issuer is not None else f"issuers.{name}"
        errors += _check_account(account, prefix, timeout)
    return LiveCheck(errors)


def _check_account(issuer: IssuerSettings, prefix: str, timeout: float) -> list[str]:
    import socket
    import ssl

    from syncd.issuers.transport import client_ssl_context

    url = urlsplit(issuer.base_url)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        context = client_ssl_context(
            issuer.base_url, issuer.ca_file, issuer.client_cert_file, issuer.client_key_file
        )
    except (OSError, ssl.SSLError) as exc:
        return [f"{prefix}.client_cert_file: cannot load the client certificate: {exc}"]
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if context is not None:
                sock.settimeout(timeout)
                with context.wrap_socket(sock, server_hostname=host):
                    pass
    except ssl.SSLCertVerificationError as exc:
        trusted = (
            f"{prefix}.ca_file {issuer.ca_file}"
            if issuer.ca_file is not None
            else f"the system CAs (set {prefix}.ca_file for a private CA)"
        )
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        return [f"{prefix}.base_url: TLS to {where} not trusted: {reason} (trusted: {trusted})"]
    except ssl.SSLError as exc:
        return [f"{prefix}.base_url: TLS handshake with {where} failed: {exc.reason}"]
    except OSError:
        return []
    return []


def located(file: str, problem: str, lines: Mapping[str, int]) -> str:
    """`FILE:LINE: path: message` like the static problems, the line of the key path the
    problem starts with (`FILE: path: message` when the config does not spell it out)."""
    from syncd.config.loader import line_of

    path = problem.split(":", 1)[0]
    line = line_of(path, lines) if " " not in path else None
    return f"{file}:{line}: {problem}" if line is not None else f"{file}: {problem}"


def _render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def run(args: argparse.Namespace) -> int:
    from syncd.commands import EXIT_OK, EXIT_USAGE, say, unreachable_exit
    from syncd.config.loader import key_lines

    config = load_config_or_exit(args.config, "check-config")
    errors: list[str] = []
    warnings: list[str] = []
    unreachable: dict[str, str] = {}
    if args.live:
        for check in (check_database, check_topics, check_issuer):
            found = check(config, args.timeout)
            errors += found.errors
            warnings += found.warnings
            unreachable.update(found.unreachable)
    if not args.quiet:
        sys.stdout.write(_render(config.masked_dump(), args.format))
    # Driver and broker messages may quote a DSN or a property: scrub every secret value.
    warnings = [config.redact(w) for w in warnings]
    errors = [config.redact(e) for e in errors]
    lines = key_lines(args.config) if errors or warnings else {}
    for warning in warnings:
        print(_warning(args.config, warning, lines), file=sys.stderr)
    for error in errors:
        print(located(args.config, error, lines), file=sys.stderr)
    if errors:
        print(f"{args.config}: {len(errors)} problem(s)", file=sys.stderr)
    for line in unreachable.values():
        say("check-config", config.redact(line))
    if unreachable:
        # The live check is incomplete: that is the answer, whatever else was found.
        return unreachable_exit(unreachable)
    if errors:
        return EXIT_USAGE
    print(f"{args.config}: OK" + (" (live)" if args.live else ""), file=sys.stderr)
    return EXIT_OK


def _warning(file: str, warning: str, lines: Mapping[str, int]) -> str:
    where, _, rest = located(file, warning, lines).partition(warning)
    return f"{where}warning: {warning}{rest}"
