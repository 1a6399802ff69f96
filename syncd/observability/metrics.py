"""Every Prometheus metric syncd exports, on an injectable registry.

Conventions (see the operations notes): one `syncd_` prefix, base units, counters end
in `_total`, ages are exported as `..._timestamp_seconds` gauges so PromQL computes
them, and labels are bounded: topic, partition, document name from the config, outcome
or status class -- never a document id, serial or invoice number.

The daemon builds one `Metrics(CollectorRegistry())` (syncd.commands.run); tests build
their own so they never see each other's samples. A custom registry has none of the
default registry's collectors, so `Metrics` registers them itself: `process_*` (start
time, resident memory, CPU, open fds), `python_info` and `python_gc_*`.

`_created` series are switched off (what `PROMETHEUS_DISABLE_CREATED_SERIES=True` does,
process-wide): the client would add one `..._created` gauge per counter and histogram
child, roughly doubling the counter series, and neither the alerts nor the dashboard use
them -- `increase()`/`rate()` handle resets, and `process_start_time_seconds` says when a
pod restarted.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from syncd import __version__
from syncd.lifecycle import DocumentState

#: HTTP calls to the provider: 5 ms .. 2 min (timeouts are tens of seconds).
#: The `account` label of a config with one `issuer:` section (named accounts: `issuers:`).
DEFAULT_ACCOUNT: Final = "default"
HTTP_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
#: Database write-back transactions: 1 ms .. 30 s.
DB_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: ERP commit -> write-back commit: 50 ms .. 1 h (retries and provider queues take minutes).
FRESHNESS_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


class DocumentOutcome(enum.StrEnum):
    """Values of the `outcome` label of `syncd_documents_total` (a closed set).

    What became of a document (at intake or from the provider), counted once it is
    committed; not a provider's answer to one call (`syncd.lifecycle.ProviderOutcome`).
    `Metrics.document_settled` takes a member, never a bare string, so a typo cannot
    open a new label value.
    """

    ISSUED = "issued"
    REVERSED = "reversed"
    REJECTED = "rejected"
    INVALID = "invalid"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    DEAD = "dead"


def status_class(status: int | None) -> str:
    """Bounded label for an HTTP status: `2xx` .. `5xx`, or `error` when no response came."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """All syncd metrics, registered on `registry` at construction."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, version: str = __version__) -> None:
        self.registry = registry
        self._accounts: list[str] = []
        #: (operation, status class, account) -> the request counter and duration children
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        r = registry
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if registry is not REGISTRY:  # the default registry has them already
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        # -- consuming
        self.events_consumed = Counter(
            "syncd_events_consumed", "Change events read from Kafka.", ["topic"], registry=r
        )
        self.consumer_lag_messages = Gauge(
            "syncd_consumer_lag_messages",
            "High watermark minus next offset to consume.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "syncd_consumer_lag_seconds",
            "Age of the oldest unprocessed event (now - its source commit time); 0 when caught up.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_event_timestamp = Gauge(
            "syncd_last_event_timestamp_seconds",
            "Source commit time of the last processed event (heartbeats included).",
            ["topic", "partition"],
            registry=r,
        )
        self.offset_commit_timestamp = Gauge(
            "syncd_offset_commit_timestamp_seconds",
            "When offsets of the partition were last committed to the ledger.",
            ["topic", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "syncd_dead_letters",
            "Records sent to the dead-letter topic.",
            ["topic", "reason"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "syncd_assigned_partitions",
            "Partitions currently assigned to this replica.",
            registry=r,
        )
        self.partitions_paused = Gauge(
            "syncd_partitions_paused",
            "Assigned partitions paused (backoff, database down, provider blocked).",
            registry=r,
        )
        self.rebalances = Counter(
            "syncd_rebalances", "Consumer group rebalance callbacks.", ["event"], registry=r
        )
        # -- documents
        self.documents = Counter(
            "syncd_documents", "Documents settled, by outcome.", ["document", "outcome"], registry=r
        )
        self.inflight_documents = Gauge(
            "syncd_inflight_documents",
            "Documents between READY and their final write-back.",
            registry=r,
        )
        self.ledger_documents = Gauge(
            "syncd_ledger_documents",
            "Ledger rows per state (refreshed periodically).",
            ["state"],
            registry=r,
        )
        self.ledger_stuck_documents = Gauge(
            "syncd_ledger_stuck_documents",
            "Non-terminal ledger rows whose last transition is older than "
            "pipeline.stuck_after_seconds (refreshed periodically).",
            registry=r,
        )
        # -- reconciliation (`syncd reconcile` records each run in the ledger; exported here
        # because the job that ran it is gone by the next scrape)
        self.reconcile_exceptions = Gauge(
            "syncd_reconcile_exceptions",
            "Exceptions of the newest `syncd reconcile` run, by class (refreshed periodically).",
            ["class"],
            registry=r,
        )
        self.reconcile_last_success = Gauge(
            "syncd_reconcile_last_success_timestamp_seconds",
            "When the newest `syncd reconcile` run finished (0 until one ran).",
            registry=r,
        )
        self.payloads_pruned = Counter(
            "syncd_ledger_payloads_pruned",
            "Stored payloads of settled documents deleted after ledger.payload_retention_days.",
            registry=r,
        )
        # -- the archive of invoice files (syncd.pipeline.files)
        self.invoice_files = Gauge(
            "syncd_invoice_files",
            "Invoice files (PDF/OFD/XML) waiting to be archived (state=pending) or given "
            "up on after files.max_attempts (state=failed), in the whole ledger.",
            ["state"],
            registry=r,
        )
        self.invoice_files_archived = Counter(
            "syncd_invoice_files_archived",
            "Invoice files this replica stored in the archive, by format.",
            ["format"],
            registry=r,
        )
        self.retries = Counter(
            "syncd_retries",
            "Retries scheduled after a transient failure.",
            ["operation"],
            registry=r,
        )
        # -- provider
        self.issuer_requests = Counter(
            "syncd_issuer_requests",
            "Requests to the e-invoice platform.",
            ["operation", "status_class", "account"],
            registry=r,
        )
        self.issuer_request_duration = Histogram(
            "syncd_issuer_request_duration_seconds",
            "Latency of requests to the platform.",
            ["operation", "account"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.issuer_account_up = Gauge(
            "syncd_issuer_account_up",
            "1 while the platform account accepts submissions, 0 while it is paused after an "
            "account-level refusal (bureau session, credit, credentials).",
            ["account"],
            registry=r,
        )
        self.issuer_credit_remaining = Gauge(
            "syncd_issuer_credit_remaining",
            "Invoicing credit (授信额度, CNY incl. tax) the platform last reported as left for "
            "the account; absent where the platform does not report it.",
            ["account"],
            registry=r,
        )
        self.declare_accounts([DEFAULT_ACCOUNT])
        # -- red-letter forms raised by buyers (syncd.pipeline.redforms)
        self.red_forms_pending = Gauge(
            "syncd_red_forms_pending",
            "Red-letter forms buyers raised against our invoices that wait for our decision "
            "(the whole fleet's, from the ledger).",
            registry=r,
        )
        self.red_forms_next_deadline = Gauge(
            "syncd_red_forms_next_deadline_timestamp_seconds",
            "Deadline of the pending red-letter form that expires first; 0 when none waits.",
            registry=r,
        )
        self.red_forms = Counter(
            "syncd_red_forms",
            "Buyer-raised red-letter forms by what happened to them in this replica "
            "(discovered, issued, expired, decided_elsewhere).",
            ["outcome"],
            registry=r,
        )
        # -- write-back
        self.writeback_duration = Histogram(
            "syncd_writeback_duration_seconds",
            "Duration of the transaction writing results, ledger and offsets.",
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.freshness = Histogram(
            "syncd_freshness_seconds",
            "ERP commit to write-back commit, per document.",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        # -- process
        self.loop_heartbeat = Gauge(
            "syncd_loop_heartbeat_timestamp_seconds",
            "Last iteration of the main loop (ticks on empty polls too).",
            registry=r,
        )
        self.build_info = Info("syncd_build", "Build of the running syncd.", registry=r)
        self.build_info.info({"version": version})
        # Pre-create label sets with fixed values so dashboards show 0, not "no data".
        for state in DocumentState:
            self.ledger_documents.labels(state=state.value).set(0)

    # ---------------------------------------------------------------- helpers

    def heartbeat(self, now: float | None = None) -> None:
        self.loop_heartbeat.set(time.time() if now is None else now)

    def document_settled(self, document: str, outcome: DocumentOutcome) -> None:
        self.documents.labels(document=document, outcome=outcome.value).inc()

    def account_up(self, up: bool, account: str = DEFAULT_ACCOUNT) -> None:
        self.issuer_account_up.labels(account=account).set(1 if up else 0)

    def declare_accounts(self, names: list[str]) -> None:
        """The configured platform accounts (the only `account` label values): each up
        until the platform refuses it."""
        for known in list(self._accounts):
            if known not in names:
                self.issuer_account_up.remove(known)
        self._accounts = list(names)
        for name in names:
            self.issuer_account_up.labels(account=name).set(1)

    def credit_remaining(self, account: str, amount: Decimal | None) -> None:
        if amount is not None:
            self.issuer_credit_remaining.labels(account=account).set(float(amount))

    def issuer_request(
        self, operation: str, status: int | None, seconds: float, account: str = DEFAULT_ACCOUNT
    ) -> None:
        # Two calls per document: the labelled children are looked up once per label set
        # (`labels()` validates and locks on every call). These series are never removed.
        key = (operation, status_class(status), account)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.issuer_requests.labels(
                    operation=operation, status_class=key[1], account=account
                ),
                self.issuer_request_duration.labels(operation=operation, account=account),
            )
        children[0].inc()
        children[1].observe(seconds)

    @contextmanager
    def time_writeback(self, clock: Callable[[], float] = time.perf_counter) -> Iterator[None]:
        start = clock()
        try:
            yield
        finally:
            self.writeback_duration.observe(clock() - start)

    def observe_freshness(self, source_ts_ms: int | None, committed_at: float) -> None:
        """ERP commit time (Debezium `source.ts_ms`) to our commit, clamped at 0 for skew."""
        if source_ts_ms is not None:
            self.freshness.observe(max(0.0, committed_at - source_ts_ms / 1000.0))

    def set_ledger_counts(self, counts: Mapping[DocumentState, int]) -> None:
        for state in DocumentState:
            self.ledger_documents.labels(state=state.value).set(counts.get(state, 0))

    def set_reconcile(self, by_class: Mapping[str, int], finished_at: float) -> None:
        """The newest reconciliation run: its exceptions per class and when it finished."""
        for cls, count in by_class.items():
            self.reconcile_exceptions.labels(**{"class": cls}).set(count)
        self.reconcile_last_success.set(finished_at)

    def set_stuck_documents(self, count: int) -> None:
        self.ledger_stuck_documents.set(max(0, count))

    def set_partition_position(
        self,
        topic: str,
        partition: int,
        *,
        lag_messages: int | None = None,
        lag_seconds: float | None = None,
        last_event_ts_ms: int | None = None,
    ) -> None:
        p = str(partition)
        if lag_messages is not None:
            self.consumer_lag_messages.labels(topic=topic, partition=p).set(max(0, lag_messages))
        if lag_seconds is not None:
            self.consumer_lag_seconds.labels(topic=topic, partition=p).set(max(0.0, lag_seconds))
        if last_event_ts_ms is not None:
            self.last_event_timestamp.labels(topic=topic, partition=p).set(
                last_event_ts_ms / 1000.0
            )

    def offsets_committed(self, topic: str, partition: int, now: float | None = None) -> None:
        self.offset_commit_timestamp.labels(topic=topic, partition=str(partition)).set(
            time.time() if now is None else now
        )

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series on revoke, so a moved partition is not reported twice."""
        p = str(partition)
        for g in (
            self.consumer_lag_messages,
            self.consumer_lag_seconds,
            self.last_event_timestamp,
            self.offset_commit_timestamp,
        ):
            with suppress(KeyError):
                g.remove(topic, p)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type (for the /metrics handler)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
