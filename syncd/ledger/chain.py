"""The audit trail's hash chains: what a link is made of and how a chain is checked (pure).

Invariant: every audit row carries `hash = sha256(canonical(row fields, chain, seq, prev))`
where `prev` is the hash of the row before it in the same chain (`GENESIS` for the first),
and `seq` counts the chain's rows from 1 without gaps. So, replaying a chain from its start
(or from a checkpoint that stands for a pruned prefix):

* an edited row no longer matches its own hash;
* a deleted row leaves a gap in `seq` and a `prev` that matches nothing;
* rows moved to other positions carry a `seq` (hashed) that no longer fits;
* rows deleted from the end no longer reach the chain head recorded in `audit_chains`.

Anyone who can write the table can also recompute every hash from an edit onwards: a hash
chain proves integrity relative to a head kept elsewhere. `docs/ledger.md` says what that
means in practice (the signed checkpoints, exporting the heads).

The trail is split into `CHAINS` chains so concurrent writers never wait for each other:
each transaction appends to a chain no other open transaction holds (see
`syncd.ledger.audit`). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import orjson

#: Number of chains; fixed by migration 0002 (the head rows it creates).
CHAINS: Final = 32
#: `prev` of the first row of a chain.
GENESIS: Final = "0" * 64
#: Version of the link format, part of every hashed text.
LINK_VERSION: Final = 1


def _text(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 as is (orjson, in C: this runs for
    every audit row the daemon writes); an integer beyond 64 bits takes the slow path."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def timestamp_text(at: datetime) -> str:
    """A timestamp as hashed: UTC, microseconds, `Z`."""
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LinkFields:
    """The fields of an audit row that its hash covers (all of them but the database id)."""

    document_id: int | None
    from_state: str | None
    to_state: str | None
    reason: str
    actor: str
    at: datetime
    details: Any
    db_user: str | None
    db_session_user: str | None
    os_user: str | None
    why: str | None

    @classmethod
    def from_mapping(cls, m: Mapping[Any, Any]) -> LinkFields:
        return cls(
            document_id=m["document_id"],
            from_state=m["from_state"],
            to_state=m["to_state"],
            reason=m["reason"],
            actor=m["actor"],
            at=m["at"],
            details=m["details"],
            db_user=m["db_user"],
            db_session_user=m["db_session_user"],
            os_user=m["os_user"],
            why=m["why"],
        )


def link_hash(fields: LinkFields, *, chain: int, seq: int, prev: str) -> str:
    """The hash of one row at position `seq` of `chain`, after a row hashed `prev`.

    `details` must be the JSON value as the database returns it (see
    `syncd.ledger.audit`, which normalises it through JSON before hashing)."""
    material = {
        "v": LINK_VERSION,
        "chain": chain,
        "seq": seq,
        "prev": prev,
        "document_id": fields.document_id,
        "from_state": fields.from_state,
        "to_state": fields.to_state,
        "reason": fields.reason,
        "actor": fields.actor,
        "at": timestamp_text(fields.at),
        "details": fields.details,
        "db_user": fields.db_user,
        "db_session_user": fields.db_session_user,
        "os_user": fields.os_user,
        "why": fields.why,
    }
    return hashlib.sha256(_text(material)).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """A stored row as `verify` reads it."""

    id: int
    chain: int
    seq: int
    prev_hash: str
    hash: str
    fields: LinkFields


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The pruned prefix of a chain: rows 1..`through_seq`, the last one hashed `last_hash`."""

    chain: int
    through_seq: int
    last_hash: str
    pruned_rows: int
    pruned_before: datetime
    signature: str | None


def checkpoint_message(cp: Checkpoint) -> bytes:
    return _text(
        {
            "v": LINK_VERSION,
            "chain": cp.chain,
            "through_seq": cp.through_seq,
            "last_hash": cp.last_hash,
            "pruned_rows": cp.pruned_rows,
            "pruned_before": timestamp_text(cp.pruned_before),
        }
    )


def sign_checkpoint(cp: Checkpoint, key: bytes) -> str:
    """`hmac-sha256:<hex>` over the checkpoint's fields."""
    return "hmac-sha256:" + hmac.new(key, checkpoint_message(cp), hashlib.sha256).hexdigest()


class BreakKind(StrEnum):
    EDITED = "edited"  # the row's content no longer matches its hash
    MISSING = "missing"  # rows between two links are gone (deleted)
    RELINKED = "relinked"  # the row does not follow the one before it (moved, replaced)
    DUPLICATE = "duplicate"  # two rows claim the same position
    START = "start"  # the chain does not start at 1 nor at a checkpoint (prefix deleted)
    CHECKPOINT = "checkpoint"  # the checkpoint's signature is wrong or missing
    HEAD = "head"  # the chain ends before its recorded head (rows deleted at the end)


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of one chain."""

    chain: int
    kind: BreakKind
    seq: int
    audit_id: int | None
    message: str


@dataclass(slots=True)
class ChainReport:
    chain: int
    rows: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoint_through: int = 0
    broken: Break | None = None


def verify_chain(
    chain: int,
    links: Iterable[Link],
    *,
    head: tuple[int, str],
    checkpoints: Iterable[Checkpoint] = (),
    key: bytes | None = None,
) -> ChainReport:
    """Replay one chain's rows in `seq` order; the report names its first broken link.

    `head` is the chain's recorded `(last_seq, last_hash)`. `checkpoints` are the chain's
    pruning checkpoints; with `key`, the one the chain starts from must carry a valid
    signature (without a key, signatures are not checked)."""
    report = ChainReport(chain)
    by_through = {cp.through_seq: cp for cp in checkpoints}
    expected_seq = 1
    expected_prev = GENESIS
    first = True
    for link in links:
        report.rows += 1
        if first:
            first = False
            report.first_seq = link.seq
            if link.seq != 1:
                cp = by_through.get(link.seq - 1)
                if cp is None or cp.last_hash != link.prev_hash:
                    report.broken = Break(
                        chain,
                        BreakKind.START,
                        link.seq,
                        link.id,
                        f"chain {chain} starts at seq {link.seq} (audit id {link.id}) but no "
                        f"checkpoint accounts for rows 1..{link.seq - 1}: rows deleted",
                    )
                    return report
                bad = _bad_signature(cp, key)
                if bad:
                    report.broken = Break(chain, BreakKind.CHECKPOINT, link.seq, link.id, bad)
                    return report
                report.checkpoint_through = cp.through_seq
                expected_seq, expected_prev = link.seq, cp.last_hash
        if link.seq < expected_seq:
            report.broken = Break(
                chain,
                BreakKind.DUPLICATE,
                link.seq,
                link.id,
                f"chain {chain}: audit id {link.id} repeats position {link.seq}",
            )
            return report
        if link.seq > expected_seq:
            report.broken = Break(
                chain,
                BreakKind.MISSING,
                expected_seq,
                link.id,
                f"chain {chain}: rows {expected_seq}..{link.seq - 1} missing before audit id "
                f"{link.id} (seq {link.seq}): rows deleted",
            )
            return report
        if link.prev_hash != expected_prev:
            report.broken = Break(
                chain,
                BreakKind.RELINKED,
                link.seq,
                link.id,
                f"chain {chain}: audit id {link.id} (seq {link.seq}) does not follow the row "
                "before it: rows replaced or reordered",
            )
            return report
        actual = link_hash(link.fields, chain=chain, seq=link.seq, prev=link.prev_hash)
        if actual != link.hash:
            report.broken = Break(
                chain,
                BreakKind.EDITED,
                link.seq,
                link.id,
                f"chain {chain}: audit id {link.id} (seq {link.seq}) was changed after it was "
                "written (its content no longer matches its hash)",
            )
            return report
        expected_seq, expected_prev = link.seq + 1, link.hash
        report.last_seq, report.last_hash = link.seq, link.hash
    if first:
        # An empty chain: nothing written, or everything pruned under a checkpoint.
        head_seq, head_hash = head
        if head_seq == 0:
            return report
        cp = by_through.get(head_seq)
        if cp is not None and cp.last_hash == head_hash:
            bad = _bad_signature(cp, key)
            if bad:
                report.broken = Break(chain, BreakKind.CHECKPOINT, head_seq, None, bad)
            report.checkpoint_through = report.last_seq = head_seq
            report.last_hash = head_hash
            return report
        report.broken = Break(
            chain,
            BreakKind.HEAD,
            1,
            None,
            f"chain {chain} is empty but its head says {head_seq} row(s): rows deleted",
        )
        return report
    if (report.last_seq, report.last_hash) != head:
        report.broken = Break(
            chain,
            BreakKind.HEAD,
            report.last_seq + 1,
            None,
            f"chain {chain} ends at seq {report.last_seq} but its head says {head[0]}: "
            "rows deleted at the end (or the head was changed)",
        )
    return report


def _bad_signature(cp: Checkpoint, key: bytes | None) -> str | None:
    if key is None:
        return None
    if cp.signature is None:
        return (
            f"chain {cp.chain}: the checkpoint for rows 1..{cp.through_seq} is not signed, "
            "but a checkpoint key is configured"
        )
    if not hmac.compare_digest(cp.signature, sign_checkpoint(cp, key)):
        return (
            f"chain {cp.chain}: the checkpoint for rows 1..{cp.through_seq} has a wrong "
            "signature (forged, edited, or signed with another key)"
        )
    return None


def prunable_prefix(rows: Iterable[tuple[int, datetime]], before: datetime) -> int:
    """The last `seq` of the longest prefix (rows `(seq, at)` in `seq` order) whose rows
    are all older than `before`: pruning never cuts a chain in the middle."""
    last = 0
    for seq, at in rows:
        if at >= before:
            break
        last = seq
    return last


__all__ = [
    "CHAINS",
    "GENESIS",
    "Break",
    "BreakKind",
    "ChainReport",
    "Checkpoint",
    "Link",
    "LinkFields",
    "link_hash",
    "prunable_prefix",
    "sign_checkpoint",
    "timestamp_text",
    "verify_chain",
]
