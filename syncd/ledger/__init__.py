"""The ledger: syncd's durable record of every document, its offsets and partition leases.

Import the repository functions from `syncd.ledger.repository`; this package only
re-exports the types most callers need.
"""

from syncd.ledger.errors import (
    DocumentNotFoundError,
    FencedError,
    FrozenPayloadError,
    IdentityConflictError,
    LedgerError,
    NotReversibleError,
    StaleStateError,
)
from syncd.ledger.models import DocumentIdentity, DocumentRow, TopicPartition, canonical_json

__all__ = [
    "DocumentIdentity",
    "DocumentNotFoundError",
    "DocumentRow",
    "FencedError",
    "FrozenPayloadError",
    "IdentityConflictError",
    "LedgerError",
    "NotReversibleError",
    "StaleStateError",
    "TopicPartition",
    "canonical_json",
]
