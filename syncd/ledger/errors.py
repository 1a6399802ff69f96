"""Typed ledger errors; each names the document or partition it is about."""

from __future__ import annotations

from syncd.errors import LedgerError
from syncd.lifecycle import DocumentState

__all__ = [
    "DocumentNotFoundError",
    "FencedError",
    "FrozenPayloadError",
    "IdentityConflictError",
    "LedgerError",
    "NotReversibleError",
    "StaleStateError",
]


class StaleStateError(LedgerError):
    """A conditional update matched no row: someone else moved the document first.

    The caller rolls its transaction back and re-reads; it is the expected outcome of a
    race, not a bug.
    """

    def __init__(
        self,
        document_id: int,
        expected: DocumentState,
        actual: DocumentState | None,
        expected_version: int | None = None,
        actual_version: int | None = None,
    ) -> None:
        self.document_id = document_id
        self.expected = expected
        self.actual = actual
        self.expected_version = expected_version
        self.actual_version = actual_version
        now = actual.value if actual is not None else "?"
        if expected_version is not None and actual is expected:
            detail = f"expected version {expected_version} in {now}, found {actual_version}"
        else:
            detail = f"expected state {expected.value}, found {now}"
        super().__init__(f"document {document_id}: {detail}")


class DocumentNotFoundError(LedgerError):
    def __init__(self, document_id: int) -> None:
        self.document_id = document_id
        super().__init__(f"document {document_id} does not exist in the ledger")


class FencedError(LedgerError):
    """This replica no longer owns the partition; everything in the transaction must roll back."""

    def __init__(
        self,
        group: str,
        topic: str,
        partition: int,
        epoch: int,
        current_epoch: int | None,
        current_owner: str | None,
    ) -> None:
        self.group = group
        self.topic = topic
        self.partition = partition
        self.epoch = epoch
        self.current_epoch = current_epoch
        self.current_owner = current_owner
        super().__init__(
            f"fenced: {topic}[{partition}] of group {group!r} is at epoch {current_epoch}"
            f" (owner {current_owner!r}); this writer holds epoch {epoch}"
        )


class IdentityConflictError(LedgerError):
    """The serial belongs to another identity, or an identity already has another serial.

    Either means the serial derivation changed or collided: never paper over it, since a
    second serial for one document is exactly the double invoice the ledger prevents.
    """

    def __init__(self, identity: str, serial: str, other: str) -> None:
        self.identity = identity
        self.serial = serial
        self.other = other
        super().__init__(f"document {identity} with serial {serial}: conflicts with {other}")


class FrozenPayloadError(LedgerError):
    """A payload change was attempted after the payload was frozen (sent or about to be)."""

    def __init__(self, document_id: int, state: DocumentState) -> None:
        self.document_id = document_id
        self.state = state
        super().__init__(
            f"document {document_id}: payload is frozen in state {state.value}; "
            "a changed document needs a new revision"
        )


class NotReversibleError(LedgerError):
    def __init__(self, document_id: int, reason: str) -> None:
        self.document_id = document_id
        super().__init__(f"document {document_id} cannot be reversed: {reason}")
