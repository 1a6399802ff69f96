"""Group commit: the decided outcomes of many documents, written in one transaction.

Workers decide a document's outcome and hand it here (`put`); ONE committer thread takes
whatever has queued up (at most `COMMIT_BATCH`) and writes it in one transaction: the
conditional ledger transitions (grouped into a few statements, so a batch costs a handful
of statements whatever its size), the reversal pairs, and the ERP write-backs. Only after
that commit does it tell the caller (`committed`), which then schedules each document's
next step, so a document is never stepped again before its outcome is recorded.

The invariant kept here: a document's ledger transition and its ERP write-back commit
together or not at all, so the ERP never shows a result the ledger does not hold, nor
the other way round. When a batch fails, each outcome is retried on its own (one
document that moved behind our back costs only itself), and every outcome that cannot
be written is reported (`failed`): its document keeps its previous state and is looked
at again. Every transition is conditional on the state the decision was based on, so a
stale outcome can never overwrite a newer one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from syncd.config import DocumentConfig
from syncd.erp.writeback import apply_writebacks, key_from_ledger
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow
from syncd.observability.metrics import Metrics
from syncd.pipeline.outcomes import Change

log = logging.getLogger(__name__)

#: Most outcomes written in one committer transaction.
COMMIT_BATCH: Final = 256


@dataclass(slots=True)
class Write:
    """A step's decided outcome waiting for the committer: `change` of `row` (the row as
    the step read it: the transition is conditional on its state)."""

    row: DocumentRow
    doc: DocumentConfig
    change: Change
    #: the document's "processing" polls so far, carried for the caller
    polls: int


Committed = Callable[[Write, DocumentRow], None]
Failed = Callable[[Write, Exception], None]
Lost = Callable[[list[Write], Exception], None]


class Committer:
    """The group-commit thread.

    `committed(write, updated_row)`: the outcome is in the ledger (and ERP).
    `failed(write, exc)`: the outcome could not be written; nothing of it was.
    `lost(batch, exc)`: an unexpected error after writing `batch` (e.g. in `committed`):
    which of its outcomes were handled is unknown, so the caller looks at them again.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        metrics: Metrics,
        owner: str,
        committed: Committed,
        failed: Failed,
        lost: Lost,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._owner = owner
        self._committed = committed
        self._failed = failed
        self._lost = lost
        self._writes: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="syncd-committer", daemon=True)
        self._thread.start()

    def put(self, write: Write) -> None:
        self._writes.put(write)

    def stop(self) -> None:
        """Stop after the batch being written. Outcomes not committed by then are simply
        not recorded: their documents stay in the state before the step and the next owner
        queries the provider first."""
        self._writes.put(None)

    def _loop(self) -> None:
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < COMMIT_BATCH:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._writes.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                self._commit(batch)
            except Exception as exc:  # the committer must outlive any one batch
                self._lost(batch, exc)

    def _commit(self, batch: list[Write]) -> None:
        """Write a batch in one transaction; when that fails, each outcome on its own, so
        one document that moved behind our back (or cannot be written) costs only itself."""
        try:
            updated = self._write(batch)
        except Exception as exc:  # decided per outcome below
            if len(batch) == 1 or _connection_lost(exc):
                for w in batch:
                    self._failed(w, exc)
                return
            for w in batch:
                try:
                    single = self._write([w])
                except Exception as one:  # handled like a failed step
                    self._failed(w, one)
                else:
                    self._committed(w, single[0])
            return
        for w, row in zip(batch, updated, strict=True):
            self._committed(w, row)

    def _write(self, batch: list[Write]) -> list[DocumentRow]:
        """Transitions (grouped into a few statements), reversal pairs and write-backs of
        `batch` in one transaction; the updated rows in batch order."""
        rows: dict[int, DocumentRow] = {}
        with self._metrics.time_writeback(), self._engine.begin() as conn:
            plain = [w for w in batch if not w.change.reversal_issued]
            changed = repo.transition_many(
                conn,
                [
                    repo.Transition(
                        w.row.id,
                        w.row.state,
                        w.change.new_state,
                        w.change.reason,
                        w.change.fields,
                        w.change.details,
                    )
                    for w in plain
                ],
                actor=self._owner,
                payloads={w.row.id: w.row.payload for w in plain},
            )
            rows.update((r.id, r) for r in changed)
            for w in batch:
                if w.change.reversal_issued:
                    rows[w.row.id], _issue = repo.mark_reversed(
                        conn, w.row.id, w.row.state, actor=self._owner, **w.change.fields
                    )
            skipped = apply_writebacks(
                conn,
                [
                    (w.doc, key_from_ledger(w.row.identity.source_key), w.change.writeback)
                    for w in batch
                    if w.change.writeback is not None
                ],
            )
        for problem in skipped:
            # The ledger keeps the result; the ERP row is gone. Say so loudly.
            log.error("write-back skipped: %s", problem)
        return [rows[w.row.id] for w in batch]


def _connection_lost(exc: Exception) -> bool:
    """A failure that would fail every outcome alike (no point retrying one by one): the
    database could not be reached, or the connection broke."""
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or exc.statement is None)


__all__ = ["COMMIT_BATCH", "Committer", "Write"]
