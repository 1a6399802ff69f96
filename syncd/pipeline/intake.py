"""Intake: turn a polled batch of Kafka records into durable ledger intent, in one transaction.

For the records of a batch, classified by `syncd.pipeline.classify`, in ONE database
transaction per batch:
* an "issue" becomes a ledger row -- READY with the serial and the validated payload frozen,
  or INVALID with readable reasons written back to the ERP row;
* a "reverse" of an ISSUED document becomes a reversal row (REVERSAL_PENDING, red payload
  frozen); a reverse of a document still in flight is *deferred*: its offset is not
  committed until the invoice settles, so it cannot be lost by a crash;
* a "re-issue" (the `reissues` condition) of a document whose current revision is fully
  REVERSED becomes the next revision (its own serial); one whose reversal is still on its
  way (recorded, or itself deferred) is deferred the same way; any other is a plain issue,
  so a re-confirmation without a reversal is never a second blue invoice;
* redelivered or repeated events find their row already there and change nothing;
* the partitions' next offsets are stored, fenced by the partition lease epoch.
After commit the pipeline hands new rows to the driver. Nothing here calls the provider.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

from syncd.changes import (
    ChangeEvent,
    RecordPosition,
)
from syncd.config import DocumentConfig, SyncdConfig
from syncd.config.related import Unresolved
from syncd.erp.lines import load_lines, load_lines_many
from syncd.erp.related import resolve_document, resolve_related
from syncd.erp.writeback import ResultStatus, WriteBack, WriteBackError, apply_writeback
from syncd.identity import DocumentIdentity, DocumentKind, serial_for, source_key_of
from syncd.invoice.from_erp import (
    MappingProblem,
    MappingResult,
    build_blue,
    build_credit_red,
    build_red,
    build_return_red,
)
from syncd.invoice.model import Invoice, LineNature
from syncd.invoice.partial import Returned, returned_so_far
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow, Operator
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.ledger.repository import NewDocument
from syncd.lifecycle import (
    INVOICE_MAY_STILL_COME,
    ISSUE_EXISTS,
    REVERSAL_MAY_STILL_COME,
    DocumentState,
)
from syncd.observability.metrics import DocumentOutcome
from syncd.pipeline.classify import Classified, Kind
from syncd.rules.approval import approval_needed
from syncd.rules.decide import identity_of, key_of
from syncd.rules.limits import CorrectionLimitError, check_red_limits, check_reissue_limit

if TYPE_CHECKING:
    from syncd.pipeline.partitions import PartitionState

log = logging.getLogger(__name__)

S = DocumentState


# --------------------------------------------------------------------------- the transaction


@dataclass(slots=True)
class IntakeResult:
    """What one batch transaction did (applied to memory only after commit)."""

    #: offsets finished by this batch, per (topic, partition)
    finished: dict[tuple[str, int], set[int]] = field(default_factory=dict)
    #: reverse events that must wait for their invoice: (issue doc id, record)
    deferred: list[tuple[int, Classified]] = field(default_factory=list)
    #: ledger rows the driver should step now
    to_drive: list[int] = field(default_factory=list)
    #: rows this transaction created, as committed (the driver's first step need not re-read)
    rows: dict[int, DocumentRow] = field(default_factory=dict)
    #: (document name, outcome label) for metrics
    outcomes: list[tuple[str, DocumentOutcome]] = field(default_factory=list)
    #: the partitions' next offsets this transaction stored: (position, lease epoch)
    positions: dict[LedgerTP, tuple[int, int]] = field(default_factory=dict)

    def finish(self, position: RecordPosition) -> None:
        self.finished.setdefault((position.topic, position.partition), set()).add(position.offset)


LedgerKey = tuple[str, str, str]


@dataclass(slots=True)
class _Prefetched:
    """What the batch path read up front: one query for the latest ledger rows of every key
    that occurs once in the batch, one query per document type for their lines."""

    single: set[LedgerKey]
    latest: dict[LedgerKey, DocumentRow]
    lines: dict[tuple[str, Any], list[dict[str, Any]]]


def _ledger_key(identity: DocumentIdentity) -> LedgerKey:
    return (identity.document_type, identity.source_table, identity.source_key)


class Intake:
    """Runs the per-batch transaction. One instance per pipeline (not thread-safe).

    Most of a busy batch is new documents, each key once: those are read with a few
    batch queries and recorded with one multi-row INSERT, instead of four round trips per
    record. A key that occurs more than once in the batch (an order confirmed and cancelled
    in the same poll) goes through the per-record path, in order, so each of its events
    sees what the previous one recorded.
    """

    def __init__(
        self, config: SyncdConfig, *, group: str, owner: str, operator: Operator | None = None
    ) -> None:
        self._config = config
        self._group = group
        self._owner = owner
        # the person the rows are recorded for (`syncd backfill`); None for the daemon
        self._operator = operator
        self._waiting: Container[int] = ()

    def run(
        self,
        conn: Connection,
        records: Sequence[Classified],
        partitions: PartitionLookup,
        waiting: Container[int] = (),
    ) -> IntakeResult:
        """Record intent for `records` and store their partitions' next offsets, in the
        caller's transaction. The intake is the one owner of stored offsets: an offset is
        stored exactly when the records before it are recorded, under the partition's
        lease epoch (a partition this replica has not claimed stores nothing).

        `waiting`: ids of documents that deferred records wait for (a re-issue behind a
        deferred reversal of the same document must wait too)."""
        result = IntakeResult()
        self._waiting = waiting
        prefetched = self._prefetch(conn, records)
        pending: list[tuple[Classified, NewDocument]] = []
        for record in records:
            if record.kind is Kind.ISSUE:
                self._issue(conn, record, result, prefetched, pending)
            elif record.kind is Kind.REVERSE:
                self._reverse(conn, record, result)
            elif record.kind is Kind.RETURN:
                self._return(conn, record, result)
            elif record.kind is Kind.CREDIT:
                self._credit(conn, record, result)
            else:
                result.finish(record.position)
        self._record_new(conn, pending, result)
        result.positions = positions_after(result, partitions)
        if result.positions:
            repo.store_offsets(conn, self._group, result.positions)
        return result

    # ------------------------------------------------------------------ batch reads

    def _prefetch(self, conn: Connection, records: Sequence[Classified]) -> _Prefetched | None:
        counts: dict[LedgerKey, int] = {}
        issues: list[tuple[LedgerKey, Classified]] = []
        for record in records:
            if (
                record.kind in (Kind.ISSUE, Kind.REVERSE)
                and record.event is not None
                and record.doc is not None
            ):
                base = identity_of(record.doc, record.event, DocumentKind.ISSUE, 0)
                key = _ledger_key(base)
                counts[key] = counts.get(key, 0) + 1
                if record.kind is Kind.ISSUE:
                    issues.append((key, record))
        single = {k for k, record in issues if counts[k] == 1}
        if len(single) < 2:
            return None  # nothing to gain over the per-record path
        latest = repo.latest_revisions(conn, sorted(single))
        refs: dict[str, tuple[DocumentConfig, list[Any]]] = {}
        for key, record in issues:
            if key in single and key not in latest:
                assert record.doc is not None and record.event is not None
                doc = record.doc
                ref = (record.event.after or {}).get(doc.lines.references or doc.key_columns[0])
                if ref is not None:
                    refs.setdefault(doc.name, (doc, []))[1].append(ref)
        lines: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for name, (doc, keys) in refs.items():
            for ref, found in load_lines_many(conn, doc, keys).items():
                lines[(name, ref)] = found
        return _Prefetched(single=single, latest=latest, lines=lines)

    def _record_new(
        self, conn: Connection, pending: list[tuple[Classified, NewDocument]], result: IntakeResult
    ) -> None:
        """One multi-row INSERT (per reason text) for the batch's new READY documents."""
        by_reason: dict[str, list[tuple[Classified, NewDocument]]] = {}
        for record, new in pending:
            by_reason.setdefault(record.reason, []).append((record, new))
        for reason, group in by_reason.items():
            rows = repo.ensure_documents(
                conn,
                [new for _, new in group],
                actor=self._owner,
                operator=self._operator,
                reason=reason,
            )
            for (record, _), (row, _created) in zip(group, rows, strict=True):
                result.to_drive.append(row.id)
                result.rows[row.id] = row
                result.finish(record.position)

    # ------------------------------------------------------------------ issue

    def _issue(
        self,
        conn: Connection,
        record: Classified,
        result: IntakeResult,
        prefetched: _Prefetched | None = None,
        pending: list[tuple[Classified, NewDocument]] | None = None,
    ) -> None:
        assert record.event is not None and record.doc is not None
        event, doc = record.event, record.doc
        base = identity_of(doc, event, DocumentKind.ISSUE, 0)
        batched = prefetched is not None and _ledger_key(base) in prefetched.single
        if batched:
            assert prefetched is not None
            latest = prefetched.latest.get(_ledger_key(base))
        else:
            latest = repo.latest_revision(
                conn, base.document_type, base.source_table, base.source_key
            )
        revision = 0
        reissue = record.decision is not None and record.decision.reissue
        if reissue:
            outcome = self._reissue(conn, record, latest, result)
            if outcome is None:
                return  # deferred, a duplicate or ignored: nothing to record now
            revision, latest = outcome
        elif latest is not None:
            if latest.state in ISSUE_EXISTS:
                result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
                result.finish(record.position)
                if latest.state in INVOICE_MAY_STILL_COME:
                    result.to_drive.append(latest.id)
                return
            if latest.state is S.REJECTED:
                if _not_newer(event, latest):
                    result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
                    result.finish(record.position)
                    return
                revision = latest.identity.revision + 1
            else:  # INVALID: never sent, may be corrected in place (same serial)
                revision = latest.identity.revision
        identity = identity_of(doc, event, DocumentKind.ISSUE, revision)
        correcting = latest is not None and latest.state is S.INVALID
        row = event.after or {}
        ref = row.get(doc.lines.references or doc.key_columns[0])
        lines = prefetched.lines.get((doc.name, ref)) if batched and prefetched else None
        max_lines = self._config.limits.max_lines_per_document
        if not lines:  # not prefetched, or none found: read them the plain way
            lines = load_lines(conn, doc, ref, limit=max_lines + 1)
        if len(lines) <= max_lines:  # related rows, read in this transaction, frozen below
            row = resolve_document(conn, doc, row, lines)
        mapped = build_blue(doc, row, lines, identity, max_lines=max_lines)
        # build_blue put serial_for(identity) in the invoice; only a document that did not map
        # needs it computed again (a SHA-256 and an encoding per document saved).
        serial = mapped.invoice.serial if mapped.invoice is not None else serial_for(identity)
        key = dict(key_of(doc, event))
        if mapped.ok and mapped.invoice is not None:
            payload = _payload(mapped.invoice)
            # A document matching its type's `approval` condition is frozen as it will be
            # sent, but waits for a person (`syncd approve`) before any provider call.
            held = approval_needed(doc, event, mapped.invoice)
            first = S.READY if held is None else S.AWAITING_APPROVAL
            reason = (
                record.reason
                if held is None
                else f"{record.reason}; awaits approval: {held.reason}"
            )
            if correcting and latest is not None:
                repo.transition(
                    conn,
                    latest.id,
                    S.INVALID,
                    first,
                    reason=reason,
                    actor=self._owner,
                    operator=self._operator,
                    payload=payload,
                    payload_hash=None,
                    last_error=None,
                    last_error_code=None,
                    source_topic=event.position.topic,
                    source_partition=event.position.partition,
                    # a backfilled row (offset -1) came from no Kafka record
                    source_offset=event.position.offset if event.position.offset >= 0 else None,
                    source_ts_ms=event.source_ts_ms,
                )
                _write_back(conn, doc, key, WriteBack(ResultStatus.PENDING))
                result.to_drive.append(latest.id)
            elif batched and pending is not None:
                pending.append(
                    (
                        record,
                        NewDocument(
                            identity=identity,
                            serial=serial,
                            state=first,
                            payload=payload,
                            position=event.position,
                            source_ts_ms=event.source_ts_ms,
                            details=None if held is None else {"awaits_approval": held.reason},
                        ),
                    )
                )
                return  # recorded (and finished) with the batch's INSERT
            else:
                created, _ = repo.ensure_document(
                    conn,
                    identity,
                    serial,
                    actor=self._owner,
                    operator=self._operator,
                    state=first,
                    payload=payload,
                    position=event.position,
                    source_ts_ms=event.source_ts_ms,
                    reason=reason,
                )
                result.to_drive.append(created.id)
        else:
            summary = mapped.summary() or "the document cannot become a valid invoice"
            if correcting and latest is not None:
                repo.transition(
                    conn,
                    latest.id,
                    S.INVALID,
                    S.INVALID,
                    reason=record.reason,
                    actor=self._owner,
                    operator=self._operator,
                    last_error_code="INVALID",
                    last_error=summary,
                    source_ts_ms=event.source_ts_ms,
                )
            else:
                repo.ensure_document(
                    conn,
                    identity,
                    serial,
                    actor=self._owner,
                    operator=self._operator,
                    state=S.INVALID,
                    position=event.position,
                    source_ts_ms=event.source_ts_ms,
                    last_error_code="INVALID",
                    last_error=summary,
                    reason=record.reason,
                )
            _write_back(conn, doc, key, WriteBack(ResultStatus.INVALID, error=summary))
            result.outcomes.append((doc.name, DocumentOutcome.INVALID))
            log.info(
                "document invalid: %s",
                summary,
                extra={
                    "topic": event.position.topic,
                    "partition": event.position.partition,
                    "offset": event.position.offset,
                    "key": str(key),
                },
            )
        result.finish(record.position)

    # ------------------------------------------------------------------ re-issue

    def _reissue(
        self,
        conn: Connection,
        record: Classified,
        latest: DocumentRow | None,
        result: IntakeResult,
    ) -> tuple[int, DocumentRow | None] | None:
        """What a re-issue change leads to: (revision to issue, the row it continues), or
        None when it is settled here (deferred, duplicate, ignored).

        Only a fully reversed current revision opens the next one, and only for a change
        newer than the reversal (a connector re-emitting an old confirmation after a later
        cancellation must not mint a revision). A reversal on its way -- recorded, or a
        record deferred in memory -- holds the re-issue back until it settles."""
        assert record.event is not None and record.doc is not None
        event, doc = record.event, record.doc
        if latest is None:
            if doc.writes_back_to_source:
                invoice_no = (event.after or {}).get(doc.write_back.columns.invoice_no)
                if invoice_no is not None:
                    # invoiced outside this ledger: the plain rule ("already invoiced") holds
                    result.outcomes.append((doc.name, DocumentOutcome.IGNORED))
                    result.finish(record.position)
                    return None
            return 0, None
        if latest.state is S.REVERSED:
            reversal = repo.find_document(conn, latest.identity.for_reversal())
            if reversal is not None and _not_newer(event, reversal):
                result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
                result.finish(record.position)
                return None
            limit = doc.max_reissues_per_day
            if limit is not None:
                ident = latest.identity
                done = repo.count_revisions_since(
                    conn, ident.document_type, ident.source_table, ident.source_key, _DAY
                )
                try:
                    check_reissue_limit(limit, done)
                except CorrectionLimitError as exc:
                    # validated before anything is sent: the ERP row says why; a later
                    # re-confirmation (after the window) is decided anew
                    why = str(exc)
                    _write_back(
                        conn,
                        doc,
                        dict(key_of(doc, event)),
                        WriteBack(
                            ResultStatus.REVERSED,
                            red_invoice_no=reversal.invoice_no if reversal else None,
                            error=why,
                        ),
                    )
                    result.outcomes.append((doc.name, DocumentOutcome.INVALID))
                    log.info("%s", why, extra={"key": str(dict(key_of(doc, event)))})
                    result.finish(record.position)
                    return None
            return latest.identity.revision + 1, None
        if latest.state is S.ISSUED:
            reversal = repo.find_document(conn, latest.identity.for_reversal())
            if reversal is not None and reversal.state in REVERSAL_MAY_STILL_COME:
                result.deferred.append((reversal.id, record))
                result.to_drive.append(reversal.id)
                return None
        if latest.state in ISSUE_EXISTS and self._waits_for(latest.id, result):
            result.deferred.append((latest.id, record))
            result.to_drive.append(latest.id)
            return None
        if latest.state in ISSUE_EXISTS:
            result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
            result.finish(record.position)
            if latest.state in INVOICE_MAY_STILL_COME:
                result.to_drive.append(latest.id)
            return None
        if latest.state is S.REJECTED:
            if _not_newer(event, latest):
                result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
                result.finish(record.position)
                return None
            return latest.identity.revision + 1, latest
        return latest.identity.revision, latest  # INVALID: corrected in place

    def _waits_for(self, doc_id: int, result: IntakeResult) -> bool:
        """A record of this batch or an earlier one is deferred behind `doc_id`."""
        return doc_id in self._waiting or any(i == doc_id for i, _ in result.deferred)

    # ------------------------------------------------------------------ reverse

    def _reverse(self, conn: Connection, record: Classified, result: IntakeResult) -> None:
        assert record.event is not None and record.doc is not None
        event, doc = record.event, record.doc
        base = identity_of(doc, event, DocumentKind.ISSUE, 0)
        issue = repo.latest_revision(conn, base.document_type, base.source_table, base.source_key)
        if issue is not None and issue.identity.revision > 0 and _not_newer(event, issue):
            # older than the change that opened this revision (a re-emitted cancellation
            # of an earlier revision): it must not reverse the current invoice
            result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
            result.finish(record.position)
            return
        if issue is None or issue.state in (S.INVALID, S.REJECTED, S.DEAD):
            result.outcomes.append((doc.name, DocumentOutcome.IGNORED))
            result.finish(record.position)
            return
        if issue.state is S.AWAITING_APPROVAL:
            # Cancelled before anyone approved it: nothing was sent, so nothing is to be
            # reversed; the invoice is not to be issued either. (Waiting for the approver
            # instead would hold the partition's progress for as long as they take.)
            why = f"source cancelled while awaiting approval ({record.reason})"
            repo.transition(
                conn,
                issue.id,
                S.AWAITING_APPROVAL,
                S.REJECTED,
                reason=why,
                actor=self._owner,
                operator=self._operator,
                last_error_code="CANCELLED_BEFORE_APPROVAL",
                last_error=why,
            )
            _write_back(
                conn, doc, dict(key_of(doc, event)), WriteBack(ResultStatus.REJECTED, error=why)
            )
            result.outcomes.append((doc.name, DocumentOutcome.REJECTED))
            result.finish(record.position)
            return
        if issue.state in INVOICE_MAY_STILL_COME:
            result.deferred.append((issue.id, record))
            result.to_drive.append(issue.id)
            return
        existing = repo.find_document(conn, issue.identity.for_reversal())
        if existing is not None or issue.state is S.REVERSED:
            result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
            if existing is not None and existing.state not in (S.REVERSED, S.REJECTED, S.DEAD):
                result.to_drive.append(existing.id)
            result.finish(record.position)
            return
        if issue.payload is None or issue.invoice_no is None:
            raise ValueError(f"issued document {issue.identity} has no frozen payload/number")
        blue = Invoice.model_validate(dict(issue.payload))
        red_identity = identity_of(doc, event, DocumentKind.REVERSAL, issue.identity.revision)
        mapped = build_red(doc, event.after or {}, blue, issue.invoice_no, red_identity)
        if (doc.returns is not None or doc.credit_notes is not None) and mapped.invoice is not None:
            partial = _live_reds(repo.reversals_of(conn, issue.id))
            if partial and _fully_returned(blue, partial):
                # credit notes (or returns) took all of it already: nothing is left to
                # reverse (Tryton cancels an invoice it credits with a refund)
                result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
                result.finish(record.position)
                return
            if partial:
                # the red invoices together may never exceed the blue one
                mapped = MappingResult(
                    None,
                    (
                        MappingProblem(
                            "RETURN",
                            "returns",
                            f"{len(partial)} partial return(s) exist against invoice "
                            f"{issue.invoice_no}; return the remaining lines instead",
                        ),
                    ),
                )
        if mapped.invoice is None:
            # A reversal reason that cannot be mapped is a config/data error: keep the
            # invoice, tell the ERP, and let a corrected cancellation come through later.
            summary = mapped.summary()
            _keep_issued(
                conn, doc, dict(key_of(doc, event)), issue, f"reversal not possible: {summary}"
            )
            result.outcomes.append((doc.name, DocumentOutcome.INVALID))
            result.finish(record.position)
            return
        refusal = self._red_refusal(conn, doc, issue)
        reversal, _ = repo.ensure_reversal(
            conn,
            issue.id,
            serial_for(red_identity),
            _payload(mapped.invoice),
            actor=self._owner,
            operator=self._operator,
            position=event.position,
            source_ts_ms=event.source_ts_ms,
            reason=record.reason,
        )
        if refusal is not None:
            # a limit of the rules: recorded, refused (REJECTED) and never sent; the blue
            # invoice stays valid, so the ERP row keeps it, with the reason beside it
            self._park_refused(conn, reversal, refusal)
            _keep_issued(conn, doc, dict(key_of(doc, event)), issue, f"reversal refused: {refusal}")
            result.outcomes.append((doc.name, DocumentOutcome.REJECTED))
            result.finish(record.position)
            return
        _write_back(conn, doc, dict(key_of(doc, event)), WriteBack(ResultStatus.REVERSAL_PENDING))
        result.to_drive.append(reversal.id)
        result.finish(record.position)

    # ------------------------------------------------------------------ return (partial red)

    def _return(self, conn: Connection, record: Classified, result: IntakeResult) -> None:
        """A return row: a partial red invoice against its document's current blue invoice.

        The issue row is locked (`FOR UPDATE`) before the earlier reds are summed, so two
        returns of the same line -- on other partitions, or other replicas -- are checked
        one after the other and can never exceed the line together."""
        assert record.event is not None and record.doc is not None
        assert record.decision is not None and record.decision.identity is not None
        event, doc, identity = record.event, record.doc, record.decision.identity
        returns = doc.returns
        assert returns is not None
        view = doc.returns_view()
        row = event.after or {}
        key = dict(identity.key)
        existing = repo.find_document(conn, identity)
        if existing is not None:
            result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
            if existing.state not in (S.REVERSED, S.REJECTED, S.DEAD):
                result.to_drive.append(existing.id)
            result.finish(record.position)
            return
        original: Any = row.get(returns.document_key)
        if isinstance(original, Decimal) and original == original.to_integral_value():
            original = int(original)
        issue = None
        if type(original) is int or type(original) is str:
            issue = repo.latest_revision(
                conn, doc.name, doc.table, source_key_of(((doc.key_columns[0], original),))
            )
        if issue is not None and issue.state in INVOICE_MAY_STILL_COME:
            result.deferred.append((issue.id, record))
            result.to_drive.append(issue.id)
            return
        if issue is None or issue.state is not S.ISSUED:
            why = (
                f"the invoice of {doc.name} {original} was reversed in full"
                if issue is not None and issue.state is S.REVERSED
                else f"{doc.name} {original} has no issued invoice to return against"
            )
            self._refuse_return(conn, view, key, record, result, why)
            return
        issue = repo.get_document(conn, issue.id, for_update=True)
        if issue.state is not S.ISSUED or issue.payload is None or issue.invoice_no is None:
            self._refuse_return(
                conn, view, key, record, result, f"{doc.name} {original} is no longer issued"
            )
            return
        blue = Invoice.model_validate(dict(issue.payload))
        live = _live_reds(repo.reversals_of(conn, issue.id))
        before = returned_so_far(live)
        mapped = build_return_red(doc, row, blue, issue.invoice_no, identity, before)
        if mapped.invoice is None or not mapped.ok:
            summary = mapped.summary() or "the return cannot become a red invoice"
            self._refuse_return(conn, view, key, record, result, summary)
            return
        refusal = self._red_refusal(conn, doc, issue, reds_before=len(live))
        reversal, _ = repo.ensure_document(
            conn,
            identity,
            serial_for(identity),
            actor=self._owner,
            operator=self._operator,
            state=S.REVERSAL_PENDING,
            payload=_payload(mapped.invoice),
            position=event.position,
            source_ts_ms=event.source_ts_ms,
            reverses_id=issue.id,
            reason=record.reason,
        )
        if refusal is not None:
            self._park_refused(conn, reversal, refusal)
            _write_back(conn, view, key, WriteBack(ResultStatus.REJECTED, error=str(refusal)))
            result.outcomes.append((view.name, DocumentOutcome.REJECTED))
            log.info("return refused: %s", refusal, extra={"key": str(key)})
            result.finish(record.position)
            return
        _write_back(conn, view, key, WriteBack(ResultStatus.REVERSAL_PENDING))
        result.to_drive.append(reversal.id)
        result.finish(record.position)

    # ------------------------------------------------------------------ credit note (red)

    def _credit(self, conn: Connection, record: Classified, result: IntakeResult) -> None:
        """A credit note row of the document table: one red invoice, under the credit
        note's own serial, for the units its lines credit of the document they credit.

        As for returns, the credited document's issue row is locked before the earlier
        reds are summed, so credit notes and returns of the same invoice are checked one
        after the other and never exceed it together."""
        assert record.event is not None and record.doc is not None
        assert record.decision is not None and record.decision.identity is not None
        event, doc, identity = record.event, record.doc, record.decision.identity
        credit = doc.credit_notes
        assert credit is not None
        row = event.after or {}
        key = dict(identity.key)
        existing = repo.find_document(conn, identity)
        if existing is not None:
            result.outcomes.append((doc.name, DocumentOutcome.DUPLICATE))
            if existing.state not in (S.REVERSED, S.REJECTED, S.DEAD):
                result.to_drive.append(existing.id)
            result.finish(record.position)
            return
        found = _credited(conn, doc, key[doc.key_columns[0]])
        if isinstance(found, str):
            self._refuse_return(conn, doc, key, record, result, f"credit note: {found}")
            return
        original, credited = found
        issue = repo.latest_revision(
            conn, doc.name, doc.table, source_key_of(((doc.key_columns[0], original),))
        )
        if issue is not None and issue.state in INVOICE_MAY_STILL_COME:
            result.deferred.append((issue.id, record))
            result.to_drive.append(issue.id)
            return
        if issue is None or issue.state is not S.ISSUED:
            why = (
                f"the invoice of {doc.name} {original} was reversed in full"
                if issue is not None and issue.state is S.REVERSED
                else f"{doc.name} {original} has no issued invoice to credit"
            )
            self._refuse_return(conn, doc, key, record, result, f"credit note: {why}")
            return
        issue = repo.get_document(conn, issue.id, for_update=True)
        if issue.state is not S.ISSUED or issue.payload is None or issue.invoice_no is None:
            why = f"credit note: {doc.name} {original} is no longer issued"
            self._refuse_return(conn, doc, key, record, result, why)
            return
        blue = Invoice.model_validate(dict(issue.payload))
        numbers = _blue_line_numbers(conn, doc, original, blue, credited, issue.invoice_no)
        if isinstance(numbers, str):
            self._refuse_return(conn, doc, key, record, result, f"credit note: {numbers}")
            return
        live = _live_reds(repo.reversals_of(conn, issue.id))
        before = returned_so_far(live)
        mapped = build_credit_red(doc, row, blue, issue.invoice_no, identity, numbers, before)
        if mapped.invoice is None or not mapped.ok:
            summary = mapped.summary() or "the credit note cannot become a red invoice"
            self._refuse_return(conn, doc, key, record, result, f"credit note: {summary}")
            return
        refusal = self._red_refusal(conn, doc, issue, reds_before=len(live))
        reversal, _ = repo.ensure_document(
            conn,
            identity,
            serial_for(identity),
            actor=self._owner,
            state=S.REVERSAL_PENDING,
            payload=_payload(mapped.invoice),
            position=event.position,
            source_ts_ms=event.source_ts_ms,
            reverses_id=issue.id,
            reason=record.reason,
        )
        if refusal is not None:  # the red-letter limits hold for credit notes too
            self._park_refused(conn, reversal, refusal)
            _write_back(conn, doc, key, WriteBack(ResultStatus.REJECTED, error=str(refusal)))
            result.outcomes.append((doc.name, DocumentOutcome.REJECTED))
            log.info("credit note refused: %s", refusal, extra={"key": str(key)})
            result.finish(record.position)
            return
        _write_back(conn, doc, key, WriteBack(ResultStatus.REVERSAL_PENDING))
        result.to_drive.append(reversal.id)
        result.finish(record.position)

    def _red_refusal(
        self,
        conn: Connection,
        doc: DocumentConfig,
        issue: DocumentRow,
        *,
        reds_before: int | None = None,
    ) -> CorrectionLimitError | None:
        """Why one more red invoice against `issue` breaks `doc.red_limits` (None: it
        does not). `reds_before`: its live red invoices, when the caller has counted them."""
        limits = doc.red_limits
        if (
            limits.within_days is None
            and limits.same_period is None
            and limits.max_reds_per_invoice is None
        ):
            return None
        if reds_before is None:
            reds_before = len(_live_reds(repo.reversals_of(conn, issue.id)))
        try:
            check_red_limits(
                limits,
                invoice_no=issue.invoice_no or "?",
                blue_issued_at=issue.issued_at,
                reds_before=reds_before,
                now=datetime.now(UTC),
            )
        except CorrectionLimitError as exc:
            return exc
        return None

    def _park_refused(
        self, conn: Connection, reversal: DocumentRow, refusal: CorrectionLimitError
    ) -> None:
        """A red invoice the rules forbid: REJECTED in the ledger (audited with the
        reason), in the transaction that recorded it, so no worker ever sends it."""
        if reversal.state is not S.REVERSAL_PENDING:
            return  # recorded earlier (a redelivery): settled then
        repo.transition(
            conn,
            reversal.id,
            S.REVERSAL_PENDING,
            S.REJECTED,
            reason=f"refused before sending: {refusal}",
            actor=self._owner,
            last_error_code=refusal.code,
            last_error=str(refusal),
        )

    def _refuse_return(
        self,
        conn: Connection,
        view: DocumentConfig,
        key: dict[str, Any],
        record: Classified,
        result: IntakeResult,
        why: str,
    ) -> None:
        """Nothing is sent: the reason goes to the return row (a corrected row, changed
        again so that it qualifies, is decided anew)."""
        _write_back(conn, view, key, WriteBack(ResultStatus.INVALID, error=why))
        result.outcomes.append((view.name, DocumentOutcome.INVALID))
        log.info("return refused: %s", why, extra={"key": str(key)})
        result.finish(record.position)


#: The window of `max_reissues_per_day`.
_DAY = timedelta(days=1)

# --------------------------------------------------------------------------- returns

#: Reversal rows whose red invoice exists or may still come (they count against the blue).
_LIVE_REVERSAL_STATES = frozenset(DocumentState) - {S.REJECTED, S.DEAD}


def _live_reds(reversals: Sequence[DocumentRow]) -> list[Invoice]:
    return [
        Invoice.model_validate(dict(r.payload))
        for r in reversals
        if r.state in _LIVE_REVERSAL_STATES and r.payload is not None
    ]


def _fully_returned(blue: Invoice, reds: Sequence[Invoice]) -> bool:
    """Every line of `blue` returned in full by `reds` (partial returns, credit notes)."""
    returned = returned_so_far(reds)
    return all(
        returned.get(line.line_no, Returned()).quantity >= line.quantity
        for line in blue.lines
        if line.quantity is not None and line.nature is not LineNature.DISCOUNT
    )


def _plain(value: Any) -> Any:
    """An integral Decimal key as int (numeric key columns arrive as Decimal)."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def _keep_issued(
    conn: Connection, doc: DocumentConfig, key: dict[str, Any], issue: DocumentRow, error: str
) -> None:
    """A reversal that will not be sent: the blue invoice stays valid, so the ERP row keeps
    it (number, date, link), with the reason in its error column."""
    _write_back(
        conn,
        doc,
        key,
        WriteBack(
            ResultStatus.ISSUED,
            invoice_no=issue.invoice_no,
            issued_at=issue.issued_at,
            url=issue.invoice_url,
            error=error,
        ),
    )


def _credited(
    conn: Connection, doc: DocumentConfig, credit_note: Any
) -> tuple[Any, dict[Any, Decimal]] | str:
    """The document a credit note credits and, per credited line (its `lines.order_by`
    value), the credited units -- read from the credit note's lines and their related
    rows; or why it cannot be told."""
    credit = doc.credit_notes
    assert credit is not None
    lines = load_lines(conn, doc, credit_note)
    if not lines:
        return "it has no lines"
    resolve_related(conn, doc.lines.related, doc.line_reads(), lines, "line")
    originals: set[Any] = set()
    credited: dict[Any, Decimal] = {}
    for line in lines:
        values = [line.get(c) for c in (credit.original, credit.line, credit.quantity)]
        problem = next((v for v in values if isinstance(v, Unresolved)), None)
        if problem is not None:
            return str(problem)
        original, credited_line, quantity = (_plain(v) for v in values)
        if original is None or credited_line is None:
            return (
                f"line {line.get(doc.lines.order_by)} credits no line of a known document "
                f"({credit.original} / {credit.line} empty)"
            )
        try:
            units = abs(Decimal(str(quantity)))
        except ArithmeticError:
            return f"line {line.get(doc.lines.order_by)}: quantity {quantity!r} is not a number"
        originals.add(original)
        credited[credited_line] = credited.get(credited_line, Decimal(0)) + units
    if len(originals) != 1:
        listed = ", ".join(sorted(map(str, originals)))
        return f"its lines credit {len(originals)} documents ({listed}); one expected"
    return originals.pop(), credited


def _blue_line_numbers(
    conn: Connection,
    doc: DocumentConfig,
    original: Any,
    blue: Invoice,
    credited: dict[Any, Decimal],
    invoice_no: str,
) -> dict[int, Decimal] | str:
    """Credited lines (`lines.order_by` values of the original document) as line numbers
    of its blue invoice: the blue lines were built from these rows in this order."""
    if any(line.nature is LineNature.DISCOUNT for line in blue.lines):
        return f"invoice {invoice_no} has discount lines; cancel the document instead"
    rows = load_lines(conn, doc, original)
    position = {_plain(r.get(doc.lines.order_by)): n for n, r in enumerate(rows, start=1)}
    if len(rows) != len(blue.lines):
        return f"the lines of {doc.name} {original} changed since invoice {invoice_no}"
    out: dict[int, Decimal] = {}
    for value, units in credited.items():
        number = position.get(value)
        if number is None:
            return f"{value} is not a line of {doc.name} {original}"
        out[number] = out.get(number, Decimal(0)) + units
    return out


def _payload(invoice: Invoice) -> dict[str, Any]:
    payload: dict[str, Any] = invoice.model_dump(mode="json")
    return payload


def _not_newer(event: ChangeEvent, row: DocumentRow) -> bool:
    """True when `event` is not a later change than the one that produced `row`."""
    if event.source_ts_ms is None or row.source_ts_ms is None:
        return False
    return event.source_ts_ms <= row.source_ts_ms


class PartitionLookup(Protocol):
    """The partitions a replica holds (`syncd.pipeline.partitions.Partitions`)."""

    def get(self, tp: tuple[str, int]) -> PartitionState | None: ...


def positions_after(
    result: IntakeResult, partitions: PartitionLookup
) -> dict[LedgerTP, tuple[int, int]]:
    """The next offset of each partition `result` finished records of, where it moved: the
    first offset not yet done, once everything before it is (contiguous progress)."""
    positions: dict[LedgerTP, tuple[int, int]] = {}
    for tp, finished in result.finished.items():
        state = partitions.get(tp)
        if state is None or state.epoch is None:
            continue
        position = state.progress.commit_position_if_done(finished)
        if position != state.stored:
            positions[LedgerTP(*tp)] = (position, state.epoch)
    return positions


def positions_of(records: Iterable[Classified]) -> set[tuple[str, int]]:
    return {(r.position.topic, r.position.partition) for r in records}


def _write_back(conn: Connection, doc: DocumentConfig, key: dict[str, Any], wb: WriteBack) -> None:
    """Write back, tolerating a row the ERP has deleted since (the ledger keeps the result)."""
    try:
        apply_writeback(conn, doc, key, wb)
    except WriteBackError as exc:
        log.warning("write-back skipped: %s", exc)
