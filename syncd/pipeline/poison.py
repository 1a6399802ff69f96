"""The one place that decides "this record is poison" versus "the world is down".

A Kafka record is processed in stages: decode, classify, decide, map and validate (pure),
then record in the ledger (one database transaction). When a stage fails, exactly one of
three things is true, and each has one answer:

* the record itself can never be processed (bad bytes, values out of bounds, a value the
  ERP database refuses, or any unexpected exception while handling *this* record, whatever
  its type): it is **poison**. It goes to the dead-letter topic with a reason code and the
  exception's message, its offset is stored, and its partition keeps flowing. Retrying it
  would fail the same way forever: a crash loop that halts every document behind it;
* a dependency failed (the ERP database unreachable, the broker down): it is an **outage**.
  Nothing about the record is wrong; its batch is rewound and retried once the dependency
  is back (`Partitions.pause_for_database`);
* another replica owns the partition now: the batch is **fenced** and dropped.

`failure_of(exc)` makes that call; `syncd.safetext.reason_of(exc)` renders what the dead
letter, the log and `syncd dlq list` show, bounded in size and always valid UTF-8.
"""

from __future__ import annotations

import enum
from typing import Final

from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from syncd.ledger.errors import FencedError

#: Database errors that say "not now" rather than "not this record". ProgrammingError is
#: among them: a missing table or a revoked grant is the deployment's fault, and dead-
#: lettering every record until an operator notices would lose the batch's order.
DEPENDENCY_ERRORS: Final = (OperationalError, InterfaceError, ProgrammingError)


class Failure(enum.Enum):
    POISON = "poison"
    OUTAGE = "outage"
    FENCED = "fenced"


def failure_of(exc: BaseException) -> Failure:
    """What a failure while handling one record (or a batch of them) means."""
    if isinstance(exc, FencedError):
        return Failure.FENCED
    if isinstance(exc, DEPENDENCY_ERRORS):
        return Failure.OUTAGE
    return Failure.POISON
