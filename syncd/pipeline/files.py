"""The file archiver: fetches issued invoices' files into the archive, beside issuance.

Invariant: exactly one whole copy of each (invoice number, format) in the archive, and
issuance never waits for it. The archiver is driven only by the ledger: it queues the
files of newly numbered documents (`ledger.files.enqueue_issued`), claims due ones under
a lease (so replicas share the work and a killed worker's files are taken again), asks
the platform for fresh links (they carry expiring tokens), downloads into the archive
(`ledger.archive`: temporary file, fsync, atomic rename) and only then records the file
DONE with its SHA-256. A crash at any point leaves the row PENDING, to be done again
with the same name: no partial file under an archive name, no second copy. Failures
are retried with backoff up to `files.max_attempts`, then FAILED (and counted in
`syncd_invoice_files{state="failed"}`).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Engine, func, select

from syncd.config import SyncdConfig
from syncd.issuers.accounts import IssuerAccounts
from syncd.issuers.base import Issued, Issuer, IssueResult
from syncd.issuers.files import FileDownloadError, download
from syncd.ledger import files as ledger_files
from syncd.ledger.archive import DirectoryArchive, Stored, TooLargeError, store_in_memory
from syncd.observability.metrics import Metrics

__all__ = ["FileArchiver"]

log = logging.getLogger(__name__)

#: Files claimed per round: one, so its lease starts when its download does.
BATCH: Final = 1
#: A claim lasts one download's time limit plus this (the query and the recording).
LEASE_MARGIN_SECONDS: Final = 10.0
#: How far back (database clock) each later sweep looks for newly numbered documents.
SWEEP_OVERLAP: Final = timedelta(minutes=10)


def _trust_of(issuer: Issuer) -> ssl.SSLContext | None:
    """The issuer's own TLS trust (a private CA, a client certificate) for its file links."""
    settings = getattr(issuer, "settings", None)
    make = getattr(settings, "ssl_context", None)
    context = make() if callable(make) else None
    return context if isinstance(context, ssl.SSLContext) else None


class FileArchiver:
    """One replica's archiver; `run_once` does one round, `start` runs rounds on a thread."""

    def __init__(
        self,
        config: SyncdConfig,
        *,
        engine: Engine,
        issuer: Issuer | IssuerAccounts,
        owner: str,
        metrics: Metrics | None = None,
    ) -> None:
        settings = config.files
        if settings.archive is None:
            raise ValueError("files.archive is not set")
        self.settings = settings
        self.engine = engine
        #: every platform account: a file's links come from the account that knows its serial
        self.clients = issuer.items() if isinstance(issuer, IssuerAccounts) else [("", issuer)]
        self.owner = owner
        self.metrics = metrics
        self.actor = f"syncd:{owner}"
        self.directory = (
            DirectoryArchive(settings.directory)
            if settings.archive == "directory" and settings.directory is not None
            else None
        )
        self.ssl_context = _trust_of(self.clients[0][1])
        self.lease = timedelta(seconds=settings.timeout_seconds + LEASE_MARGIN_SECONDS)
        self._since: datetime | None = None
        self._next_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one round ---------------------------------------------------------------------

    def run_once(self) -> int:
        """Queue new files, then fetch the due ones claimed now. Returns files finished."""
        with self.engine.begin() as conn:
            if time.monotonic() >= self._next_sweep:
                started = conn.execute(select(func.now())).scalar_one()
                ledger_files.enqueue_issued(conn, self.settings.formats, since=self._since)
                self._since = started - SWEEP_OVERLAP
                self._next_sweep = time.monotonic() + self.settings.poll_seconds
            jobs = ledger_files.claim(conn, self.owner, lease=self.lease, limit=BATCH)
        links: dict[tuple[str, bool], IssueResult | Exception] = {}
        finished = 0
        for job in jobs:
            if self._stop.is_set():
                break
            finished += self._fetch(job, links)
        self.refresh_gauges()
        return finished

    def _links(
        self, job: ledger_files.FileJob, cache: dict[tuple[str, bool], IssueResult | Exception]
    ) -> IssueResult | Exception:
        key = (job.serial, job.reversal)
        if key not in cache:
            for _, client in self.clients:  # a serial is known to one account only
                try:
                    cache[key] = (
                        client.query_reversal(job.serial)
                        if job.reversal
                        else client.query(job.serial)
                    )
                except Exception as exc:  # any provider failure: try again later
                    cache[key] = exc
                if isinstance(cache[key], Issued):
                    break
        return cache[key]

    def _fetch(
        self, job: ledger_files.FileJob, cache: dict[tuple[str, bool], IssueResult | Exception]
    ) -> int:
        result = self._links(job, cache)
        if isinstance(result, Exception):
            return self._failed(job, f"platform query failed: {type(result).__name__}")
        if not isinstance(result, Issued):
            return self._failed(job, f"platform answered {type(result).__name__} for the serial")
        url = result.files.get(job.format)
        if url is None:
            with self.engine.begin() as conn:
                ledger_files.unavailable(conn, job, actor=self.actor)
            return 1
        try:
            stored = self._store(job, url)
        except (FileDownloadError, TooLargeError) as exc:
            return self._failed(job, str(exc))
        with self.engine.begin() as conn:
            recorded = ledger_files.complete(
                conn,
                job,
                sha256=stored.sha256,
                size=stored.size,
                location=stored.location,
                content=stored.content,
                retention_years=self.settings.retention_years,
                actor=self.actor,
            )
        if recorded:
            log.info(
                "archived %s file of invoice %s (%d bytes, sha256 %s)",
                job.format,
                job.invoice_no,
                stored.size,
                stored.sha256,
            )
            if self.metrics is not None:
                self.metrics.invoice_files_archived.labels(format=job.format).inc()
        return 1

    def _store(self, job: ledger_files.FileJob, url: str) -> Stored:
        timeout = self.settings.timeout_seconds
        with download(url, timeout=timeout, ssl_context=self.ssl_context) as chunks:
            if self.directory is not None:
                return self.directory.store(
                    job.invoice_no,
                    job.format,
                    job.issued_at,
                    chunks,
                    max_bytes=self.settings.max_bytes,
                )
            return store_in_memory(chunks, max_bytes=self.settings.max_bytes)

    def _failed(self, job: ledger_files.FileJob, error: str) -> int:
        with self.engine.begin() as conn:
            if job.attempts >= self.settings.max_attempts:
                ledger_files.give_up(conn, job, error, actor=self.actor)
                log.warning(
                    "gave up archiving %s file of invoice %s: %s",
                    job.format,
                    job.invoice_no,
                    error,
                )
                return 1
            delay = timedelta(seconds=min(2.0**job.attempts, 3600.0))
            ledger_files.retry_later(conn, job, error, delay)
        log.info("%s file of invoice %s not archived yet: %s", job.format, job.invoice_no, error)
        return 0

    def refresh_gauges(self) -> None:
        if self.metrics is None:
            return
        with self.engine.connect() as conn:
            counts = ledger_files.counts(conn)
        self.metrics.invoice_files.labels(state="pending").set(counts[ledger_files.PENDING])
        self.metrics.invoice_files.labels(state="failed").set(counts[ledger_files.FAILED])

    # --- in the background -----------------------------------------------------------------

    def sweep_partials(self) -> int:
        """Remove partial downloads older than a lease (left by a crashed replica)."""
        if self.directory is None:
            return 0
        return self.directory.sweep(self.lease.total_seconds())

    def run_until(self, done: Callable[[], bool]) -> None:
        """Rounds until `done()` or `stop()`; a round that finished nothing waits a poll."""
        self.sweep_partials()
        while not self._stop.is_set() and not done():
            try:
                worked = self.run_once()
            except Exception:  # the ledger or archive is down: the next round tries again
                log.exception("file archiver round failed")
                worked = 0
            if not worked:
                self._stop.wait(self.settings.poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run_until, args=(lambda: False,), name="file-archiver", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
