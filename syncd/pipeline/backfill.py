"""Backfill: ledger intent for existing rows that no change event will ever bring.

A backfill feeds syncd's own pipeline, not the connector: each row the `--where`
condition selects is read as it is now, decided (`syncd.rules.backfill.decide_current`),
and handed to THE intake (`syncd.pipeline.intake.Intake`) as the snapshot record of that
row would be. So a backfilled document gets the identity, the serial, the frozen payload
and the ERP write-back the CDC path gives it, by construction -- there is no second way
to build either. Exactly-once rests on what already holds for CDC:
* the ledger's unique identity makes the backfill and a live change event of the same
  row (racing on other connections, replicas or partitions) record ONE document -- the
  second one finds it there and changes nothing;
* the backfill only records intent (READY, REVERSAL_PENDING); the running daemon drives
  the document (its resume sweep picks up due rows of the partitions it holds) under the
  frozen serial, querying the provider first whenever it may already know it.

Each page is one transaction: the documents it records and the run's cursor
(`syncd.ledger.backfills.advance`) commit together, so a killed backfill resumes after
the last page it committed, and a page re-read after a kill records nothing twice.

What a backfill does NOT do (each reported with its reason, nothing lost): reverse a
document whose invoice is still on its way (run again once it settled), re-issue a
reversed or rejected document (a person re-confirms it in the ERP, and CDC does the rest),
or touch a document whose invoice payload was pruned.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection

from syncd.changes import ChangeEvent, ColumnValue, Op, RecordPosition
from syncd.config import DocumentConfig, SyncdConfig
from syncd.config.conditions import Condition
from syncd.erp.lines import load_lines_many
from syncd.erp.related import resolve_document
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.invoice.from_erp import build_blue
from syncd.invoice.model import Invoice
from syncd.ledger import repository as repo
from syncd.ledger.models import DocumentRow, Operator
from syncd.lifecycle import INVOICE_MAY_STILL_COME, DocumentState
from syncd.pipeline.classify import Classified, Kind
from syncd.pipeline.intake import Intake
from syncd.rules.approval import approval_needed
from syncd.rules.backfill import decide_current
from syncd.rules.conditions import evaluate
from syncd.rules.decide import Action, Decision, DocumentRules

S = DocumentState

#: The offset of a backfilled document's position: it came from no Kafka record (the
#: ledger stores NULL for it).
BACKFILL_OFFSET: Final = -1
#: Documents per second a backfill records unless `--rate` says otherwise: a tenth of the
#: 200 documents/s the daemon is measured at (docs/performance.md), so live traffic keeps
#: the lion's share of the provider and of the daemon's workers.
DEFAULT_RATE: Final = 20.0

ISSUE: Final = "issue"
REVERSE: Final = "reverse"
SKIP: Final = "skip"
INVALID: Final = "invalid"


@dataclass(frozen=True, slots=True)
class Planned:
    """What the backfill does (dry run: would do) with one row."""

    key: dict[str, Any]
    #: issue | reverse | invalid (recorded INVALID, the reason written back) | skip
    action: str
    reason: str
    serial: str | None = None
    #: the ledger state recorded (or, for a skip, found)
    state: str | None = None
    net: Decimal | None = None
    tax: Decimal | None = None
    gross: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "reason": self.reason,
            "serial": self.serial,
            "state": self.state,
            "net": self.net,
            "tax": self.tax,
            "gross": self.gross,
        }


@dataclass(slots=True)
class Totals:
    """Counts per action and amounts (Decimal) of what was issued and reversed."""

    scanned: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    net: dict[str, Decimal] = field(default_factory=dict)
    tax: dict[str, Decimal] = field(default_factory=dict)
    gross: dict[str, Decimal] = field(default_factory=dict)

    def add(self, planned: Sequence[Planned]) -> None:
        for p in planned:
            self.scanned += 1
            self.counts[p.action] = self.counts.get(p.action, 0) + 1
            if p.gross is not None:
                for bucket, value in ((self.net, p.net), (self.tax, p.tax), (self.gross, p.gross)):
                    bucket[p.action] = bucket.get(p.action, Decimal("0")) + (value or Decimal(0))

    def count(self, action: str) -> int:
        return self.counts.get(action, 0)

    def ledger_counts(self) -> dict[str, int]:
        """The run's counters (`syncd.ledger.backfills.COUNTERS`)."""
        return {
            "scanned": self.scanned,
            "issued": self.count(ISSUE),
            "reversed": self.count(REVERSE),
            "skipped": self.count(SKIP),
            "invalid": self.count(INVALID),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "counts": {a: self.count(a) for a in (ISSUE, REVERSE, INVALID, SKIP)},
            "amounts": {
                a: {"net": self.net[a], "tax": self.tax[a], "gross": self.gross[a]}
                for a in (ISSUE, REVERSE)
                if a in self.gross
            },
        }


class Pacer:
    """At most `rate` documents per second on average (a token bucket of one second's
    worth): `wait(n)` after recording n documents sleeps as long as they call for."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    def wait(self, n: int) -> float:
        """Account for `n` documents; returns the seconds slept."""
        now = self._clock()
        # idle time earns at most one second of burst
        self._next = max(self._next, now - 1.0) + n / self._rate
        delay = self._next - now
        if delay > 0:
            self._sleep(delay)
            return delay
        return 0.0


def page_size_for(rate: float) -> int:
    """Rows read per page (one transaction): about a second's worth at `rate`."""
    return max(10, min(500, int(rate)))


def choose_partition(source_key: str, partitions: Sequence[int]) -> int:
    """The partition a backfilled document is filed under (its daemon owner drives it):
    a stable hash of the key over the partitions the group holds; 0 when none is known
    yet (every topic has a partition 0, and its owner resumes the document on claiming)."""
    if not partitions:
        return 0
    ordered = sorted(partitions)
    return ordered[zlib.crc32(source_key.encode()) % len(ordered)]


class _NoPartitions:
    """A backfill stores no Kafka offsets: no partition is ever "held" by it."""

    def get(self, tp: tuple[str, int]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Row:
    event: ChangeEvent
    decision: Decision
    identity: DocumentIdentity | None


class Backfill:
    """Decides and records one page of rows at a time, in the caller's transaction."""

    def __init__(
        self,
        config: SyncdConfig,
        doc: DocumentConfig,
        condition: Condition,
        *,
        actor: str,
        operator: Operator | None,
        topic: str,
        partitions: Sequence[int],
        run_id: int | None = None,
    ) -> None:
        self._config = config
        self._doc = doc
        self._condition = condition
        self._rules = DocumentRules.of(doc)
        self._topic = topic
        self._partitions = list(partitions)
        self._label = f"backfill run {run_id}" if run_id is not None else "backfill"
        self._intake = Intake(config, group=config.kafka.group_id, owner=actor, operator=operator)

    # ------------------------------------------------------------------ deciding

    def _event(self, row: Mapping[str, ColumnValue], read_ts_ms: int) -> ChangeEvent:
        # position: filed under a partition of the document's topic (see choose_partition);
        # source time: when the row was read, so the intake's "is this change newer" rules
        # see the row as the newest state of the document
        key = "|".join(f"{k}={row.get(k)!s}" for k in self._doc.key_columns)
        position = RecordPosition(
            self._topic, choose_partition(key, self._partitions), BACKFILL_OFFSET
        )
        return ChangeEvent(
            position=position,
            op=Op.READ,
            table=self._doc.table,
            key=None,
            before=None,
            after=dict(row),
            source_ts_ms=read_ts_ms,
            snapshot=True,
        )

    def _decide(self, rows: Sequence[Mapping[str, ColumnValue]], read_ts_ms: int) -> list[_Row]:
        out: list[_Row] = []
        for row in rows:
            event = self._event(row, read_ts_ms)
            check = evaluate(self._condition, event)
            if not check.is_true:  # the SQL and the evaluator disagree: trust the evaluator
                decision = Decision(
                    Action.IGNORE, f"does not match --where ({check.reason})", self._doc.name
                )
            else:
                decision = decide_current(event, self._doc, self._rules)
            out.append(_Row(event, decision, decision.identity))
        return out

    def _key(self, r: _Row) -> dict[str, Any]:
        if r.identity is not None:
            return dict(r.identity.key)
        after = r.event.after or {}
        return {k: after.get(k) for k in self._doc.key_columns}

    def _triage(
        self, conn: Connection, decided: Sequence[_Row]
    ) -> list[tuple[_Row, Planned | None, DocumentRow | None]]:
        """Each row with its verdict: a Planned skip, or None (to record) and the latest
        ledger row of its document (None: not in the ledger)."""
        keys = [
            (r.identity.document_type, r.identity.source_table, r.identity.source_key)
            for r in decided
            if r.identity is not None
        ]
        latest = repo.latest_revisions(conn, keys)
        out: list[tuple[_Row, Planned | None, DocumentRow | None]] = []
        for r in decided:
            ident = r.identity
            action = r.decision.action
            if ident is None or action not in (Action.ISSUE, Action.REVERSE):
                out.append((r, Planned(self._key(r), SKIP, r.decision.reason), None))
                continue
            have = latest.get((ident.document_type, ident.source_table, ident.source_key))
            if action is Action.ISSUE:
                if have is None or have.state is S.INVALID:
                    out.append((r, None, have))
                else:
                    why = f"already in the ledger as {have.state.value}"
                    out.append((r, _skip(self._key(r), why, have), None))
                continue
            out.append((r, self._reversal_skip(conn, r, have), have))
        return out

    def _reversal_skip(
        self, conn: Connection, r: _Row, issue: DocumentRow | None
    ) -> Planned | None:
        key = self._key(r)
        if issue is None:
            return Planned(key, SKIP, f"{r.decision.reason}; no invoice to reverse")
        if issue.state in INVOICE_MAY_STILL_COME:
            return _skip(
                key,
                "its invoice is still on its way: run the backfill again once it settled",
                issue,
            )
        if issue.state is not S.ISSUED:
            return _skip(key, f"the invoice is {issue.state.value}, nothing to reverse", issue)
        if repo.find_document(conn, issue.identity.for_reversal()) is not None:
            return _skip(key, "a reversal is already recorded", issue)
        if issue.payload is None or issue.invoice_no is None:
            return _skip(key, "the invoice's frozen payload was pruned: reverse it by hand", issue)
        return None

    # ------------------------------------------------------------------ dry run

    def plan(
        self, conn: Connection, rows: Sequence[Mapping[str, ColumnValue]], read_ts_ms: int
    ) -> list[Planned]:
        """What `record` would do with these rows, with the invoices' totals; writes
        nothing (reads the ERP and the ledger only)."""
        triaged = self._triage(conn, self._decide(rows, read_ts_ms))
        doc = self._doc
        refs = [
            (r.event.after or {}).get(doc.lines.references or doc.key_columns[0])
            for r, skip, _ in triaged
            if skip is None and r.decision.action is Action.ISSUE
        ]
        lines = load_lines_many(conn, doc, [x for x in refs if x is not None]) if refs else {}
        out: list[Planned] = []
        for r, skip, have in triaged:
            if skip is not None:
                out.append(skip)
            elif r.decision.action is Action.REVERSE:
                assert have is not None and have.payload is not None
                out.append(
                    self._priced(r, REVERSE, have, Invoice.model_validate(dict(have.payload)), -1)
                )
            else:
                out.append(self._price_issue(conn, r, have, lines))
        return out

    def _price_issue(
        self,
        conn: Connection,
        r: _Row,
        have: DocumentRow | None,
        lines: Mapping[Any, list[dict[str, Any]]],
    ) -> Planned:
        doc = self._doc
        assert r.identity is not None
        revision = have.identity.revision if have is not None else 0
        identity = DocumentIdentity.of(
            doc.name, doc.table, r.identity.key, DocumentKind.ISSUE, revision
        )
        row: Mapping[str, Any] = dict(r.event.after or {})
        found = lines.get(row.get(doc.lines.references or doc.key_columns[0])) or []
        max_lines = self._config.limits.max_lines_per_document
        if len(found) <= max_lines:
            row = resolve_document(conn, doc, row, found)
        mapped = build_blue(doc, row, found, identity, max_lines=max_lines)
        if not mapped.ok or mapped.invoice is None:
            summary = mapped.summary() or "the document cannot become a valid invoice"
            return Planned(
                dict(identity.key), INVALID, summary, serial_for(identity), S.INVALID.value
            )
        held = approval_needed(doc, r.event, mapped.invoice)
        planned = self._priced(r, ISSUE, None, mapped.invoice, 1, identity)
        if held is None:
            return planned
        return replace(planned, state=S.AWAITING_APPROVAL.value)

    def _priced(
        self,
        r: _Row,
        action: str,
        issue: DocumentRow | None,
        invoice: Invoice,
        sign: int,
        identity: DocumentIdentity | None = None,
    ) -> Planned:
        t = invoice.totals
        if identity is None:
            assert issue is not None
            identity = issue.identity.for_reversal()
        state = S.READY if action == ISSUE else S.REVERSAL_PENDING
        return Planned(
            dict(identity.key),
            action,
            r.decision.reason,
            serial_for(identity),
            state.value,
            Decimal(sign) * Decimal(t.net_amount),
            Decimal(sign) * Decimal(t.tax_amount),
            Decimal(sign) * Decimal(t.gross_amount),
        )

    # ------------------------------------------------------------------ recording

    def record(
        self, conn: Connection, rows: Sequence[Mapping[str, ColumnValue]], read_ts_ms: int
    ) -> list[Planned]:
        """Record intent for these rows through the intake, in the caller's transaction;
        what became of each row, read back from the ledger."""
        triaged = self._triage(conn, self._decide(rows, read_ts_ms))
        todo: list[Classified] = []
        for r, skip, _ in triaged:
            if skip is None:
                kind = Kind.ISSUE if r.decision.action is Action.ISSUE else Kind.REVERSE
                todo.append(
                    Classified(
                        r.event.position,
                        kind,
                        f"{self._label}: {r.decision.reason}",
                        event=r.event,
                        doc=self._doc,
                        decision=r.decision,
                    )
                )
        result = self._intake.run(conn, todo, _NoPartitions()) if todo else None
        deferred = {id(record) for _, record in result.deferred} if result else set()
        out: list[Planned] = []
        by_event = {id(c.event): c for c in todo}
        issue_keys = [
            (r.identity.document_type, r.identity.source_table, r.identity.source_key)
            for r, skip, _ in triaged
            if skip is None and r.identity is not None
        ]
        after = repo.latest_revisions(conn, issue_keys)
        for r, skip, _ in triaged:
            if skip is not None:
                out.append(skip)
                continue
            record = by_event[id(r.event)]
            key = self._key(r)
            if id(record) in deferred:
                out.append(
                    Planned(key, SKIP, "its invoice is still on its way: run the backfill again")
                )
                continue
            assert r.identity is not None
            ident = r.identity
            row = after.get((ident.document_type, ident.source_table, ident.source_key))
            if r.decision.action is Action.REVERSE and row is not None:
                row = repo.find_document(conn, row.identity.for_reversal())
            out.append(_recorded(key, r, row))
        return out


def _recorded(key: dict[str, Any], r: _Row, row: DocumentRow | None) -> Planned:
    if row is None:
        return Planned(key, SKIP, f"{r.decision.reason}; nothing recorded")
    action = REVERSE if r.decision.action is Action.REVERSE else ISSUE
    if row.source_offset is not None:
        # the identity's one row came from a change event that won the race: the backfill
        # found it there (the same serial) and recorded nothing
        why = f"recorded meanwhile from a change event ({row.state.value})"
        return Planned(key, SKIP, why, row.serial, row.state.value)
    if row.state is S.INVALID:
        return Planned(key, INVALID, row.last_error or "invalid", row.serial, row.state.value)
    net = tax = gross = None
    if row.payload is not None:
        totals = row.payload.get("totals") or {}
        net, tax, gross = (
            Decimal(str(totals[k])) if k in totals else None
            for k in ("net_amount", "tax_amount", "gross_amount")
        )
        if action == REVERSE and gross is not None and gross > 0:
            net, tax, gross = (None if v is None else -v for v in (net, tax, gross))
    return Planned(key, action, r.decision.reason, row.serial, row.state.value, net, tax, gross)


def _skip(key: dict[str, Any], why: str, row: DocumentRow) -> Planned:
    return Planned(key, SKIP, why, row.serial, row.state.value)


__all__ = [
    "DEFAULT_RATE",
    "Backfill",
    "Pacer",
    "Planned",
    "Totals",
    "choose_partition",
    "page_size_for",
]
