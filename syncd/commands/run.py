"""`syncd run -c CONFIG`: the daemon."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import signal
import socket
import uuid
from types import FrameType
from typing import IO, TYPE_CHECKING

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from syncd.config import SyncdConfig
    from syncd.issuers.accounts import IssuerAccounts
    from syncd.issuers.base import Issuer

HELP = "run the daemon: consume Debezium topics, issue invoices, write results back"

log = logging.getLogger("syncd")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    parser.add_argument(
        "--owner", help="replica id used for partition leases (default: hostname-pid-random)"
    )


def run(args: argparse.Namespace) -> int:
    from syncd.commands import load_config_or_exit

    config = load_config_or_exit(args.config, "run")
    from syncd.erp.writeback import apply_side_table_migrations
    from syncd.ledger.engine import ledger_engine
    from syncd.ledger.migrate import upgrade
    from syncd.lifecycle import RetryPolicy
    from syncd.observability.health import HealthServer
    from syncd.observability.metrics import Metrics
    from syncd.pipeline.driver import Driver
    from syncd.pipeline.loop import Pipeline
    from syncd.pipeline.redforms import start_poller

    start_logging(config)
    owner = args.owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    pipeline_cfg = config.pipeline
    workers = pipeline_cfg.workers
    # Workers hold a database connection only around their short reads and writes, never
    # while waiting for the provider: a pool of up to 32 (+4 for the consumer loop and
    # gauges) serves many more workers without crowding the ERP's max_connections.
    engine = ledger_engine(
        config.database.dsn_value(),
        config.database.schema_name,
        pool_size=max(config.database.pool_size, min(workers, 32) + 4),
        max_overflow=8,
    )
    if pipeline_cfg.migrate_on_start:
        log.info("migrating syncd schema %s", config.database.schema_name)
        upgrade(engine, config.database.schema_name)
        with engine.begin() as conn:
            for table in apply_side_table_migrations(conn, config):
                log.info("write-back side table %s migrated", table)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    health = HealthServer(registry, host=config.metrics.host, port=config.metrics.port)
    health.add_readiness_check("config", lambda: True)
    issuer = create_accounts(config, engine, workers)
    metrics.declare_accounts(issuer.names)
    for name, account in issuer.items():
        proxy = getattr(account, "proxy", None)
        if proxy is not None:
            log.info("reaching the e-invoice platform (%s) through proxy %s", name, proxy.display)
    retry = pipeline_cfg.retry
    policy = RetryPolicy(
        base_delay=retry.backoff_base_seconds,
        max_delay=retry.backoff_max_seconds,
        max_attempts=retry.max_attempts,
        blocked_recheck=retry.blocked_recheck_seconds,
        poll_interval=pipeline_cfg.poll_interval_seconds,
        max_poll_interval=max(pipeline_cfg.poll_interval_seconds, 30.0),
    )

    def make_driver(on_settled):  # type: ignore[no-untyped-def]
        return Driver(
            engine=engine,
            issuer=issuer,
            config=config,
            metrics=metrics,
            owner=owner,
            workers=workers,
            policy=policy,
            on_settled=on_settled,
            rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            query_horizon={
                name: account.query_horizon_seconds for name, account in config.accounts().items()
            },
            event_loop=pipeline_cfg.provider_calls == "event_loop",
        )

    pipeline = Pipeline(
        config,
        engine=engine,
        driver_factory=make_driver,
        metrics=metrics,
        health=health,
        owner=owner,
    )
    archiver = None
    if config.files.archive is not None:
        from syncd.pipeline.files import FileArchiver

        # Beside the pipeline, never in its way: files are fetched from the ledger's queue.
        archiver = FileArchiver(config, engine=engine, issuer=issuer, owner=owner, metrics=metrics)
        archiver.start()
    # Served only now: the pipeline has registered its checks (group, database), so /readyz
    # can never answer "ready" on the config check alone while the daemon is starting.
    health.start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        health.begin_shutdown()
        pipeline.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("syncd started as %s; metrics on %s:%d", owner, config.metrics.host, health.port)
    # each account's company has its own buyers' forms: one poller per account
    pollers = [
        poller
        for _, client in issuer.items()
        if (poller := start_poller(engine, client, config, metrics)) is not None
    ]
    settle_garbage_collector()
    try:
        pipeline.run()
    finally:
        for poller in pollers:
            poller.stop()
        if archiver is not None:
            archiver.stop()
        issuer.close()
        engine.dispose()
        health.stop()
    return 0


#: How often a Nuonuo account asks for its remaining credit line (on the way to a submit).
CREDIT_CHECK_SECONDS = 300.0

#: Allocations (net) between young-generation collections; CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def start_logging(config: SyncdConfig, stream: IO[str] | None = None) -> logging.Handler:
    """The daemon's log handler as `logging:` says (`json: false`: text lines), with every
    configured secret registered for redaction before the first line is written."""
    from syncd.observability.logs import configure_logging, register_secret

    handler = configure_logging(
        config.logging.level, stream=stream, json_lines=config.logging.json_format
    )
    for secret in _secrets(config):
        register_secret(secret)
    return handler


def settle_garbage_collector() -> None:
    """Keep the cycle collector off the hot path.

    Under load, CPython's default thresholds make the collector run hundreds of times a
    minute and pause every thread for full collections (figures: docs/performance.md).
    What start-up built (config,
    compiled rules, SQLAlchemy and pydantic machinery, imported modules) lives as long as
    the process, so `gc.freeze()` takes it out of every later collection; a larger young
    threshold lets reference counting free a batch's short-lived objects before the
    collector ever walks them. Cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def create_accounts(config: object, engine: object, workers: int) -> IssuerAccounts:
    """One provider client per platform account (`issuers:`, or `issuer:` as `default`),
    routed by the seller each account issues for."""
    from syncd.config import SyncdConfig
    from syncd.config.accounts import AccountSettings
    from syncd.issuers.accounts import IssuerAccounts
    from syncd.issuers.registry import create_issuer

    assert isinstance(config, SyncdConfig)
    issuers: dict[str, Issuer] = {}
    sellers: dict[str, str] = {}
    dependencies = issuer_dependencies(config, engine)  # one token store for every account
    try:
        for name, account in config.accounts().items():
            issuers[name] = create_issuer(
                account.provider,
                issuer_settings(config, workers, account=name),
                **(dependencies if account.provider == "nuonuo" else {}),
            )
            if isinstance(account, AccountSettings) and account.seller is not None:
                sellers[account.seller.tax_id] = name
    except BaseException:
        for made in issuers.values():
            made.close()
        raise
    return IssuerAccounts(issuers, sellers)


def issuer_settings(
    config: object, workers: int, *, account: str | None = None
) -> dict[str, object]:
    """The provider settings of `account` (default: the first) with the HTTP pool sized
    to those who call: the worker pool, and on the event loop the in-flight limit.

    Every worker (every document in flight, on the event loop) may hold one provider call
    at a time; a smaller pool makes callers queue for a connection, and fewer keep-alive
    slots than callers means a new TCP (and TLS) connection for most calls. Values the
    operator set explicitly are kept.
    """
    from syncd.config import SyncdConfig

    assert isinstance(config, SyncdConfig)
    section = config.primary_issuer if account is None else config.accounts()[account]
    settings = section.provider_settings()
    explicit = section.model_fields_set
    # On the event loop every document in flight may hold one provider call at a time.
    pipeline = config.pipeline
    callers = max(workers, pipeline.max_in_flight if pipeline.provider_calls == "event_loop" else 0)
    for key in ("max_connections", "max_keepalive_connections"):
        if key not in explicit:
            settings[key] = max(int(settings[key]), callers)
    return settings


def issuer_dependencies(config: object, engine: object) -> dict[str, object]:
    """What a provider client needs besides its settings: Nuonuo's access token is cached
    in the ledger so every replica shares one (docs/issuers.md)."""
    from sqlalchemy import Engine

    from syncd.config import SyncdConfig

    assert isinstance(config, SyncdConfig) and isinstance(engine, Engine)
    if all(account.provider != "nuonuo" for account in config.accounts().values()):
        return {}
    from syncd.ledger.tokens import LedgerTokenStore

    return {"token_store": LedgerTokenStore(engine), "credit_interval": CREDIT_CHECK_SECONDS}


def _secrets(config: SyncdConfig) -> list[str]:
    """Every secret value of the config (`SyncdConfig.secret_values`, the one registry):
    the issuer secret, the database password and secret DSN parameters, SASL and key
    passwords, secret Kafka properties, URL userinfo."""
    return list(config.secret_values())
