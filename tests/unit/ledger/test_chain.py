"""The audit chain's pure replay: every kind of tampering is named at its first link."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncd.ledger.chain import (
    GENESIS,
    BreakKind,
    Checkpoint,
    Link,
    LinkFields,
    link_hash,
    sign_checkpoint,
    verify_chain,
)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEY = b"k" * 32


def fields(i: int) -> LinkFields:
    return LinkFields(
        document_id=i,
        from_state=None if i == 0 else "READY",
        to_state="ISSUED",
        reason=f"step {i}",
        actor="r1",
        at=T0 + timedelta(seconds=i),
        details={"n": i, "text": "税"},
        db_user="syncd",
        db_session_user="syncd",
        os_user=None,
        why=None,
    )


def chain(n: int, c: int = 3) -> list[Link]:
    out: list[Link] = []
    prev = GENESIS
    for i in range(n):
        digest = link_hash(fields(i), chain=c, seq=i + 1, prev=prev)
        out.append(Link(100 + i, c, i + 1, prev, digest, fields(i)))
        prev = digest
    return out


def head(links: list[Link]) -> tuple[int, str]:
    return (links[-1].seq, links[-1].hash) if links else (0, GENESIS)


def test_an_intact_chain_verifies() -> None:
    links = chain(5)
    report = verify_chain(3, links, head=head(links))
    assert report.broken is None and report.rows == 5 and report.last_seq == 5


def kind(links: list[Link], h: tuple[int, str]) -> BreakKind | None:
    broken = verify_chain(3, links, head=h).broken
    return None if broken is None else broken.kind


def test_edit_delete_reorder_truncate_are_named() -> None:
    links = chain(6)
    h = head(links)
    edited = list(links)
    edited[2] = dataclasses.replace(links[2], fields=dataclasses.replace(fields(2), why="x"))
    assert kind(edited, h) is BreakKind.EDITED
    deleted = links[:2] + links[3:]
    assert kind(deleted, h) is BreakKind.MISSING
    swapped = [
        *links[:2],
        dataclasses.replace(links[3], seq=3),
        dataclasses.replace(links[2], seq=4),
        *links[4:],
    ]
    assert kind(swapped, h) is BreakKind.RELINKED
    assert kind(links[:4], h) is BreakKind.HEAD
    assert kind(links[2:], h) is BreakKind.START
    assert kind([], h) is BreakKind.HEAD


def test_a_signed_checkpoint_continues_the_chain_and_a_forged_one_does_not() -> None:
    links = chain(6)
    h = head(links)
    cp = Checkpoint(3, 2, links[1].hash, 2, T0 + timedelta(days=1), None)
    signed = dataclasses.replace(cp, signature=sign_checkpoint(cp, KEY))
    report = verify_chain(3, links[2:], head=h, checkpoints=[signed], key=KEY)
    assert report.broken is None and report.checkpoint_through == 2
    unsigned = verify_chain(3, links[2:], head=h, checkpoints=[cp], key=KEY)
    assert unsigned.broken is not None and unsigned.broken.kind is BreakKind.CHECKPOINT
    other = dataclasses.replace(cp, signature=sign_checkpoint(cp, b"x" * 32))
    forged = verify_chain(3, links[2:], head=h, checkpoints=[other], key=KEY)
    assert forged.broken is not None and forged.broken.kind is BreakKind.CHECKPOINT
    # everything pruned: the head is the checkpoint
    whole = Checkpoint(3, 6, links[-1].hash, 6, T0 + timedelta(days=1), None)
    whole = dataclasses.replace(whole, signature=sign_checkpoint(whole, KEY))
    assert verify_chain(3, [], head=h, checkpoints=[whole], key=KEY).broken is None


@given(st.integers(min_value=1, max_value=12), st.data())
def test_any_single_field_change_is_detected(n: int, data: st.DataObject) -> None:
    links = chain(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    name = data.draw(st.sampled_from(["reason", "actor", "db_user", "why", "to_state"]))
    values: dict[str, Any] = {name: "tampered"}
    changed = dataclasses.replace(links[i].fields, **values)
    links[i] = dataclasses.replace(links[i], fields=changed)
    report = verify_chain(3, links, head=head(chain(n)))
    assert report.broken is not None and report.broken.seq == i + 1
