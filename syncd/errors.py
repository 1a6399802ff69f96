"""The error tree: every error syncd raises on purpose, and what is done with each family.

```
SyncdError                      root: an error syncd raises on purpose (never a library's)
├── ConfigError                 config/loader: the file, an override or a secret is wrong
│                               -> start-up stops, exit 2, every problem with file:line
├── RecordError                 one Kafka record can never be processed  -> dead letter
│   ├── DecodeError             changes: bytes, JSON, schema or a `limits` bound
│   └── IdentityError           identity: the change carries no usable document key
├── DocumentError               one document cannot become a valid invoice
│   │                           -> INVALID in the ledger, the reason written back
│   ├── TaxMathError            invoice/taxmath
│   └── UblError                invoice/ubl
├── LedgerError                 the ledger refused a change
│   ├── InvalidTransitionError  lifecycle: not a legal state change (a bug: crash loudly)
│   ├── StaleStateError         ledger/errors: another worker moved the row first -> stop
│   ├── FencedError             ledger/errors: another replica owns the partition
│   │                           -> drop the batch; the owner reads it again
│   ├── DocumentNotFoundError, IdentityConflictError, FrozenPayloadError,
│   │   NotReversibleError      ledger/errors: an operator asked for the impossible
│   ├── InvalidSchemaNameError  ledger/engine: `database.schema_name` is not an identifier
│   └── ChainBrokenError        ledger/audit: pruning refused, an audit chain is broken
├── WriteBackError              erp/writeback: the ERP row is gone or not writable
│                               -> the ledger keeps the result; logged
├── ListingError                issuers/base: the platform's invoice list could not be read
│                               -> the search or report is retried (or a person acts)
├── FileArchiveError            an invoice file not archived this time -> retried, then FAILED
│   ├── FileDownloadError       issuers/files: an error status, a broken or slow download
│   └── TooLargeError           ledger/archive: larger than files.max_bytes
└── OperatorError               an operator command's input (redrive, migrate, demo,
                                the period of the finance commands, reconcile's document
                                type and its platform list, red-forms' --account) -> exit 2
                                with one line
```

Not in the tree, on purpose: a *dependency* failing (SQLAlchemy's OperationalError,
InterfaceError, ProgrammingError; confluent-kafka's KafkaException) is the world being
down, not syncd deciding something: the pipeline pauses and retries (see
`syncd.pipeline.poison.failure_of`, the one place that tells poison from outage). Any
other exception is a bug: it crashes the daemon loudly, except while handling one record,
where it makes that record poison (dead letter) so one bad record can never become a
crash loop.

Concrete classes live next to the code that raises them (the module named above) and
derive from these families; where code has always caught them as `ValueError`, they keep
that base too.
"""

from __future__ import annotations

__all__ = [
    "DocumentError",
    "FileArchiveError",
    "LedgerError",
    "OperatorError",
    "RecordError",
    "SyncdError",
]


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""


class RecordError(SyncdError):
    """One Kafka record can never be processed: it goes to the dead-letter topic."""


class DocumentError(SyncdError):
    """One document cannot become a valid invoice: INVALID, the reason written back."""


class LedgerError(SyncdError):
    """The ledger refused a change."""


class FileArchiveError(SyncdError):
    """An invoice file was not archived this time: retried later, then FAILED."""


class OperatorError(SyncdError):
    """An operator command's input is wrong: exit 2 with one line."""
