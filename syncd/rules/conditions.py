"""Evaluating the DBAs' conditions (`syncd.config.conditions`) against change events.

Evaluation is three-valued. A column whose value Debezium did not send
(an unchanged TOASTed value, `UNAVAILABLE`) or a transition that cannot be seen
(an update without a `before` image) makes the outcome UNKNOWN with a reason,
never a silent True/False: an invoice must neither be issued nor skipped on a
guess.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Final, TypeAlias

from syncd._speedups import quick_init
from syncd.changes import UNAVAILABLE, ChangeEvent, ColumnValue, Op, Row
from syncd.config.conditions import Condition, Scalar


class Truth(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"


# Evaluation compares module constants: enum member access is an attribute lookup through
# the enum's metaclass on Python 3.11, dear at once per condition node.
_TRUE: Final = Truth.TRUE
_FALSE: Final = Truth.FALSE
_UNKNOWN: Final = Truth.UNKNOWN
_CREATE: Final = Op.CREATE
_READ: Final = Op.READ
_DELETE: Final = Op.DELETE


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a condition plus why, in words a DBA understands."""

    truth: Truth
    reason: str

    @property
    def is_true(self) -> bool:
        return self.truth is _TRUE

    @property
    def is_unknown(self) -> bool:
        return self.truth is _UNKNOWN


def _fmt(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, bool) else str(value)


def same_value(actual: ColumnValue, expected: Scalar) -> bool:
    """Compare a decoded column value with a YAML literal.

    YAML gives ints/floats/strings while Debezium gives Decimals, ints, dates and
    enum strings; numbers are compared as exact decimals (a YAML float goes via
    its repr, so `0.13` means 0.13, not the binary approximation).
    """
    if actual is None or expected is None:
        return actual is None and expected is None
    if type(actual) is str and type(expected) is str:
        return actual == expected  # the common case (enum/status text), decided below alike
    if isinstance(actual, bool) or isinstance(expected, bool):
        if isinstance(actual, bool) and isinstance(expected, bool):
            return actual == expected
        if isinstance(actual, str) and isinstance(expected, bool):
            return actual.strip().lower() == str(expected).lower()
        return False
    if isinstance(actual, int | Decimal) and isinstance(expected, int | float | Decimal | str):
        try:
            return Decimal(actual) == Decimal(str(expected))
        except InvalidOperation:
            return False
    if isinstance(actual, str) and isinstance(expected, int | float | Decimal):
        try:
            return Decimal(actual) == Decimal(str(expected))
        except InvalidOperation:
            return False
    if isinstance(actual, datetime) and isinstance(expected, str):
        return actual.isoformat() == expected
    if isinstance(actual, date) and not isinstance(actual, datetime) and isinstance(expected, str):
        return actual.isoformat() == expected
    return actual == expected


def _image(event: ChangeEvent, which: str) -> Row | None:
    return event.after if which == "after" else event.before


def _read(event: ChangeEvent, which: str, column: str) -> tuple[ColumnValue, Outcome | None]:
    """Read one column; an Outcome instead means the value cannot be known."""
    row = _image(event, which)
    if row is None:
        return None, Outcome(_UNKNOWN, f"{column}: the change has no {which} image")
    if column not in row:
        return None, Outcome(_UNKNOWN, f"{column}: no such column in the {which} image")
    value = row[column]
    if value is UNAVAILABLE:
        return None, Outcome(
            _UNKNOWN,
            f"{column}: value not sent by Debezium (unchanged TOAST column; "
            "set REPLICA IDENTITY FULL on the table)",
        )
    return value, None


def _outcome(ok: bool, true_reason: str, false_reason: str) -> Outcome:
    return Outcome(_TRUE, true_reason) if ok else Outcome(_FALSE, false_reason)


def evaluate(condition: Condition, event: ChangeEvent) -> Outcome:
    """Evaluate a condition against one change (three-valued, with a reason)."""
    if condition.column is not None:
        return _evaluate_column(condition, condition.column, event)
    if condition.changed is not None:
        return _evaluate_changed(condition.changed, event)
    if condition.all_ is not None:
        return _all([evaluate(c, event) for c in condition.all_])
    if condition.any_ is not None:
        return _any([evaluate(c, event) for c in condition.any_])
    assert condition.not_ is not None
    inner = evaluate(condition.not_, event)
    if inner.truth is _UNKNOWN:
        return inner
    return Outcome(_FALSE if inner.is_true else _TRUE, f"not ({inner.reason})")


def _all(outcomes: Sequence[Outcome]) -> Outcome:
    for o in outcomes:
        if o.truth is _FALSE:
            return o  # one false decides, even next to an unknown
    unknown = [o for o in outcomes if o.is_unknown]
    if unknown:
        return unknown[0]
    return Outcome(_TRUE, " and ".join(o.reason for o in outcomes))


def _any(outcomes: Sequence[Outcome]) -> Outcome:
    for o in outcomes:
        if o.is_true:
            return o
    unknown = [o for o in outcomes if o.is_unknown]
    if unknown:
        return unknown[0]
    return Outcome(_FALSE, " and ".join(o.reason for o in outcomes))


def _evaluate_column(c: Condition, column: str, event: ChangeEvent) -> Outcome:
    fields = c.model_fields_set
    if "becomes" in fields:
        after, problem = _read(event, "after", column)
        if problem is not None:
            return problem
        target = c.becomes
        if not same_value(after, target):
            return Outcome(_FALSE, f"{column} is {_fmt(after)}, not {_fmt(target)}")
        if event.op in (_CREATE, _READ):
            verb = "was created" if event.op is _CREATE else "was read in the snapshot"
            return Outcome(_TRUE, f"row {verb} with {column} {_fmt(target)}")
        if event.before is None:
            return Outcome(
                _UNKNOWN,
                f"{column} is {_fmt(target)} but the update has no before image, so a "
                "transition cannot be seen (set REPLICA IDENTITY FULL on the table)",
            )
        before, problem = _read(event, "before", column)
        if problem is not None:
            return problem
        if same_value(before, target):
            return Outcome(_FALSE, f"{column} was already {_fmt(target)}")
        return Outcome(_TRUE, f"{column} became {_fmt(target)}")
    value, problem = _read(event, c.row, column)
    if problem is not None:
        return problem
    label = column if c.row == "after" else f"before.{column}"
    if "equals" in fields:
        return _outcome(
            same_value(value, c.equals),
            f"{label} is {_fmt(c.equals)}",
            f"{label} is {_fmt(value)}, not {_fmt(c.equals)}",
        )
    if "in_" in fields:
        options = c.in_ or []
        return _outcome(
            any(same_value(value, o) for o in options),
            f"{label} is {_fmt(value)}",
            f"{label} is {_fmt(value)}, not one of {', '.join(_fmt(o) for o in options)}",
        )
    if (cmp := c.comparison()) is not None:
        return _compare(label, value, *cmp)
    is_null = value is None
    wanted = bool(c.is_null)
    return _outcome(
        is_null == wanted,
        f"{label} is {'null' if wanted else 'not null'}",
        f"{label} is {'null' if is_null else _fmt(value)}",
    )


_COMPARE: Final[dict[str, Callable[[Decimal, Decimal], bool]]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


def as_decimal(value: ColumnValue) -> Decimal | None:
    """An exact number of a column value (ints, Decimals, numeric text), else None.
    Floats go via their repr, like YAML literals in `same_value`."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _compare(label: str, value: ColumnValue, op: str, bound: Decimal) -> Outcome:
    """A comparison with a bound; NULL or a non-number cannot be compared: UNKNOWN."""
    number = as_decimal(value)
    if number is None:
        return Outcome(_UNKNOWN, f"{label} is {_fmt(value)}, not a number to compare with {bound}")
    return _outcome(
        _COMPARE[op](number, bound),
        f"{label} {number} {op} {bound}",
        f"{label} is {number}, not {op} {bound}",
    )


def _evaluate_changed(columns: Sequence[str], event: ChangeEvent) -> Outcome:
    if event.op in (_CREATE, _READ):
        return Outcome(_TRUE, "row is new")
    if event.op is _DELETE:
        return Outcome(_TRUE, "row was deleted")
    if event.before is None:
        return Outcome(
            _UNKNOWN,
            "the update has no before image, so changed columns cannot be seen "
            "(set REPLICA IDENTITY FULL on the table)",
        )
    unknown: list[str] = []
    for column in columns:
        after, problem = _read(event, "after", column)
        if problem is None:
            before, problem = _read(event, "before", column)
        if problem is not None:
            unknown.append(problem.reason)
            continue
        if after != before:
            return Outcome(_TRUE, f"{column} changed from {_fmt(before)} to {_fmt(after)}")
    if unknown:
        return Outcome(_UNKNOWN, unknown[0])
    return Outcome(_FALSE, f"none of {', '.join(columns)} changed")


# --- compiled conditions ------------------------------------------------------------------

#: A condition compiled for one config: the same Outcome as `evaluate`, read per event.
Check: TypeAlias = Callable[[ChangeEvent], Outcome]


def compile_condition(condition: Condition) -> Check:
    """`evaluate(condition, ·)` as a function, for a condition evaluated per event.

    `evaluate` reads the pydantic model on every call (which test, which keys were
    set) and formats reasons that do not depend on the event; a compiled check does
    that once. The results are equal (tests hold the two to each other); `evaluate`
    stays the definition.
    """
    if condition.column is not None and "becomes" in condition.model_fields_set:
        return _compile_becomes(condition.column, condition.becomes)
    children = condition.all_ if condition.all_ is not None else condition.any_
    if children is not None:
        checks = tuple(compile_condition(c) for c in children)
        combine = _all if condition.all_ is not None else _any
        return lambda event: combine([check(event) for check in checks])
    return lambda event: evaluate(condition, event)


#: Distinct text values whose "not the target" outcome a compiled check keeps.
_REMEMBERED_MISSES: Final = 64


def _compile_becomes(column: str, target: Scalar) -> Check:
    """`{column: .., becomes: ..}`, the usual trigger, with its constant outcomes built once."""
    target_text = _fmt(target)
    created = Outcome(_TRUE, f"row was created with {column} {target_text}")
    read = Outcome(_TRUE, f"row was read in the snapshot with {column} {target_text}")
    no_before = Outcome(
        _UNKNOWN,
        f"{column} is {target_text} but the update has no before image, so a "
        "transition cannot be seen (set REPLICA IDENTITY FULL on the table)",
    )
    already = Outcome(_FALSE, f"{column} was already {target_text}")
    became = Outcome(_TRUE, f"{column} became {target_text}")
    text_target = type(target) is str
    # "status is DRAFT, not CONFIRMED": one outcome per text value seen (a status column
    # has a handful), not one per event
    misses: dict[str, Outcome] = {}

    def check(event: ChangeEvent) -> Outcome:
        row = event.after
        if row is None or column not in row or row[column] is UNAVAILABLE:
            return _read(event, "after", column)[1] or _impossible()
        after = row[column]
        if text_target and type(after) is str:
            if after != target:
                miss = misses.get(after)
                if miss is None:
                    miss = Outcome(_FALSE, f"{column} is {after}, not {target_text}")
                    if len(misses) < _REMEMBERED_MISSES:
                        misses[after] = miss
                return miss
        elif not same_value(after, target):
            return Outcome(_FALSE, f"{column} is {_fmt(after)}, not {target_text}")
        op = event.op
        if op is _CREATE:
            return created
        if op is _READ:
            return read
        row = event.before
        if row is None:
            return no_before
        if column not in row or row[column] is UNAVAILABLE:
            return _read(event, "before", column)[1] or _impossible()
        before = row[column]
        if before == target if text_target and type(before) is str else same_value(before, target):
            return already
        return became

    return check


def _impossible() -> Outcome:  # pragma: no cover - _read reports every case checked above
    raise AssertionError("a column read failed without a reason")
