"""The audit trail in the database: appending chained rows, reading, verifying, pruning.

Invariant: a row is appended only by `append`, which holds its chain's head row locked
(`audit_chains`, `FOR UPDATE`) from reading the last hash until the caller's transaction
ends, so a chain's rows are numbered 1, 2, 3... and each links to the one before it. No
writer ever *waits* for a head: `append` takes the first head no other transaction holds
(`SKIP LOCKED`), starting from one derived from its database session, so concurrent
writers spread over the chains instead of queueing behind one row, and a transaction
that appends twice finds its own head again (a row it holds is never skipped). Only when
every head is held does a writer wait for its own.

Who is recorded on every row: the database's `current_user` and `session_user`, the
`actor` (the replica, or `operator:<user>@<host>`), and for a person acting through a
command the `Operator` (OS user and the reason given).

Pruning (`prune`) removes the oldest rows of each chain only after verifying it, and
records a checkpoint (last pruned hash and position, HMAC-signed when a key is
configured) in the same transaction; the database refuses to delete a row no checkpoint
accounts for. See docs/ledger.md, "Audit trail".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, delete, func, insert, select, update

from syncd.errors import LedgerError
from syncd.ledger.bulk import json_insert, json_rows, statement
from syncd.ledger.chain import (
    CHAINS,
    ChainReport,
    Checkpoint,
    Link,
    LinkFields,
    link_hash,
    sign_checkpoint,
    verify_chain,
)
from syncd.ledger.models import AuditEntry, Operator, fast_json
from syncd.ledger.schema import audit, audit_chains, audit_checkpoints

#: Columns every appended row sets, in the order of the JSON rows.
_COLUMNS: Final = (
    "document_id",
    "from_state",
    "to_state",
    "reason",
    "actor",
    "details",
    "at",
    "db_user",
    "db_session_user",
    "os_user",
    "why",
    "chain",
    "seq",
    "prev_hash",
    "hash",
)


def _pick_statement(*, wait: bool) -> Any:
    preferred = func.pg_backend_pid() % CHAINS
    q = select(
        audit_chains.c.chain,
        audit_chains.c.last_seq,
        audit_chains.c.last_hash,
        func.now().label("at"),
        func.current_user().label("db_user"),
        func.session_user().label("db_session_user"),
    )
    if wait:
        return q.where(audit_chains.c.chain == preferred).with_for_update()
    order = (audit_chains.c.chain - preferred + CHAINS) % CHAINS
    return q.order_by(order).limit(1).with_for_update(skip_locked=True)


def _json_value(value: Any) -> Any:
    """A JSON value as the database will give it back (what the hash must cover)."""
    return None if value is None else orjson.loads(fast_json(value))


def append(
    conn: Connection,
    rows: Sequence[Mapping[str, Any]],
    *,
    operator: Operator | None = None,
) -> None:
    """Append audit rows (keys: document_id, from_state, to_state, reason, actor, details)
    to one chain, in the caller's transaction."""
    if not rows:
        return
    head = conn.execute(statement(("audit_pick", False), lambda: _pick_statement(wait=False)))
    found = head.first()
    if found is None:  # every chain is held by another transaction: wait for ours
        found = conn.execute(
            statement(("audit_pick", True), lambda: _pick_statement(wait=True))
        ).one()
    chain, seq, prev, at, db_user, db_session_user = found
    os_user = operator.os_user if operator else None
    why = operator.why if operator else None
    out: list[dict[str, Any]] = []
    for r in rows:
        seq += 1
        fields = LinkFields(
            document_id=r["document_id"],
            from_state=r["from_state"],
            to_state=r["to_state"],
            reason=r["reason"],
            actor=r["actor"],
            at=at,
            details=_json_value(r["details"]),
            db_user=db_user,
            db_session_user=db_session_user,
            os_user=os_user,
            why=why,
        )
        digest = link_hash(fields, chain=chain, seq=seq, prev=prev)
        out.append(
            {
                "document_id": fields.document_id,
                "from_state": fields.from_state,
                "to_state": fields.to_state,
                "reason": fields.reason,
                "actor": fields.actor,
                "details": fields.details,
                "at": at.isoformat(),
                "db_user": db_user,
                "db_session_user": db_session_user,
                "os_user": os_user,
                "why": why,
                "chain": chain,
                "seq": seq,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    conn.execute(
        statement(("audit", _COLUMNS), lambda: json_insert(audit, _COLUMNS)), json_rows(out)
    )
    conn.execute(
        update(audit_chains)
        .where(audit_chains.c.chain == chain)
        .values(last_seq=seq, last_hash=prev, updated_at=func.now())
    )


def record_action(
    conn: Connection,
    reason: str,
    *,
    actor: str,
    operator: Operator | None = None,
    document_id: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """An audit row for something that is not a state change (`dlq replay`, an approval)."""
    append(
        conn,
        [
            {
                "document_id": document_id,
                "from_state": None,
                "to_state": None,
                "reason": reason,
                "actor": actor,
                "details": None if details is None else dict(details),
            }
        ],
        operator=operator,
    )


# ------------------------------------------------------------------------------ reading


def entries(conn: Connection, document_ids: Iterable[int]) -> list[AuditEntry]:
    """The audit rows of these documents, oldest first."""
    ids = list(document_ids)
    if not ids:
        return []
    q = select(audit).where(audit.c.document_id.in_(ids)).order_by(audit.c.at, audit.c.id)
    return [AuditEntry.from_mapping(m) for m in conn.execute(q).mappings()]


def entries_between(
    conn: Connection, start: datetime, end: datetime, *, batch: int = 2000
) -> Iterator[AuditEntry]:
    """Audit rows with `start <= at < end`, oldest first, streamed (a server-side cursor:
    memory stays flat however long the period). Needs an open transaction."""
    q = (
        select(audit)
        .where(audit.c.at >= start, audit.c.at < end)
        .order_by(audit.c.at, audit.c.id)
        .execution_options(yield_per=batch)
    )
    for m in conn.execute(q).mappings():
        yield AuditEntry.from_mapping(m)


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class VerifyResult:
    chains: list[ChainReport]

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chains)

    @property
    def broken(self) -> list[ChainReport]:
        return [c for c in self.chains if c.broken is not None]


def _checkpoint(m: Mapping[Any, Any]) -> Checkpoint:
    return Checkpoint(
        chain=m["chain"],
        through_seq=m["through_seq"],
        last_hash=m["last_hash"],
        pruned_rows=m["pruned_rows"],
        pruned_before=m["pruned_before"],
        signature=m["signature"],
    )


def _links(conn: Connection, *, batch: int) -> Iterator[Link]:
    q = (
        select(audit)
        .order_by(audit.c.chain, audit.c.seq, audit.c.id)
        .execution_options(yield_per=batch)
    )
    for m in conn.execute(q).mappings():
        yield Link(
            id=m["id"],
            chain=m["chain"],
            seq=m["seq"],
            prev_hash=m["prev_hash"],
            hash=m["hash"],
            fields=LinkFields.from_mapping(m),
        )


def verify(conn: Connection, *, key: bytes | None = None, batch: int = 5000) -> VerifyResult:
    """Replay every chain (`syncd.ledger.chain.verify_chain`). Run it in a REPEATABLE READ
    transaction so heads and rows are one snapshot."""
    heads = {
        m["chain"]: (int(m["last_seq"]), str(m["last_hash"]))
        for m in conn.execute(select(audit_chains)).mappings()
    }
    checkpoints: dict[int, list[Checkpoint]] = {}
    for m in conn.execute(select(audit_checkpoints)).mappings():
        checkpoints.setdefault(m["chain"], []).append(_checkpoint(m))
    by_chain: dict[int, list[Link]] = {}
    reports: dict[int, ChainReport] = {}
    current: int | None = None

    def finish(chain: int, links: list[Link]) -> None:
        reports[chain] = verify_chain(
            chain,
            links,
            head=heads.get(chain, (0, "")),
            checkpoints=checkpoints.get(chain, ()),
            key=key,
        )

    # One chain in memory at a time (rows are ordered by chain): a chain is at most the
    # trail's size / CHAINS rows.
    for link in _links(conn, batch=batch):
        if link.chain != current:
            if current is not None:
                finish(current, by_chain.pop(current))
            current = link.chain
            by_chain[current] = []
        by_chain[current].append(link)
    if current is not None:
        finish(current, by_chain.pop(current))
    for chain in sorted(set(heads) | set(checkpoints)):
        if chain not in reports:
            finish(chain, [])
    return VerifyResult([reports[c] for c in sorted(reports)])


# ------------------------------------------------------------------------------ pruning


class ChainBrokenError(LedgerError):
    """Pruning refused: pruning a broken chain would hide where it broke."""

    def __init__(self, reports: list[ChainReport]) -> None:
        self.reports = reports
        first = reports[0].broken
        super().__init__(
            f"{len(reports)} audit chain(s) broken, nothing pruned; first: "
            f"{first.message if first else '?'}"
        )


def prune(
    conn: Connection,
    before: datetime,
    *,
    actor: str,
    operator: Operator | None,
    key: bytes | None = None,
    dry_run: bool = False,
) -> list[Checkpoint]:
    """Delete, chain by chain, the longest prefix of rows older than `before`, after
    verifying the chain; each pruned prefix leaves a checkpoint (signed with `key` if
    given) in the same transaction, and the pruning itself is audited."""
    result = verify(conn, key=key)
    if result.broken:
        raise ChainBrokenError(result.broken)
    made: list[Checkpoint] = []
    for report in result.chains:
        chain = report.chain
        recent = conn.execute(
            select(func.min(audit.c.seq)).where(audit.c.chain == chain, audit.c.at >= before)
        ).scalar_one_or_none()
        bound = audit.c.seq < recent if recent is not None else audit.c.seq.is_not(None)
        last = conn.execute(
            select(audit.c.seq, audit.c.hash, func.count().over().label("n"))
            .where(audit.c.chain == chain, bound)
            .order_by(audit.c.seq.desc())
            .limit(1)
        ).first()
        if last is None:
            continue
        cp = Checkpoint(
            chain=chain,
            through_seq=int(last.seq),
            last_hash=str(last.hash),
            pruned_rows=int(last.n),
            pruned_before=before,
            signature=None,
        )
        if key is not None:
            cp = Checkpoint(
                cp.chain,
                cp.through_seq,
                cp.last_hash,
                cp.pruned_rows,
                cp.pruned_before,
                sign_checkpoint(cp, key),
            )
        made.append(cp)
        if dry_run:
            continue
        conn.execute(
            insert(audit_checkpoints).values(
                chain=cp.chain,
                through_seq=cp.through_seq,
                last_hash=cp.last_hash,
                pruned_rows=cp.pruned_rows,
                pruned_before=cp.pruned_before,
                signature=cp.signature,
                db_user=func.current_user(),
                os_user=operator.os_user if operator else None,
                why=operator.why if operator else None,
            )
        )
        conn.execute(delete(audit).where(audit.c.chain == chain, audit.c.seq <= cp.through_seq))
    if made and not dry_run:
        record_action(
            conn,
            "audit pruned",
            actor=actor,
            operator=operator,
            details={
                "pruned_before": before.isoformat(),
                "rows": sum(c.pruned_rows for c in made),
                "chains": [
                    {"chain": c.chain, "through_seq": c.through_seq, "rows": c.pruned_rows}
                    for c in made
                ],
                "signed": key is not None,
            },
        )
    return made


__all__ = [
    "ChainBrokenError",
    "VerifyResult",
    "append",
    "entries",
    "entries_between",
    "prune",
    "record_action",
    "verify",
]
