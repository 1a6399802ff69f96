"""A small condition language for the DBAs' config, written as YAML data.

DBAs must be able to say "status becomes CONFIRMED" without anyone running
Python from a config file, so a condition is a tree of plain mappings that this
module evaluates itself -- there is no `eval`, no templating, no attribute
access. The language:

    {column: status, becomes: CONFIRMED}     # transition into a value
    {column: status, equals: CONFIRMED}      # state
    {column: status, in: [CONFIRMED, SHIPPED]}
    {column: invoice_no, is_null: true}
    {changed: [status, total_amount]}        # any of these columns changed
    {all: [...]}, {any: [...]}, {not: {...}}

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
from typing import Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from syncd.changes import UNAVAILABLE, ChangeEvent, ColumnValue, Op, Row
from syncd.frozen import quick_init

Scalar: TypeAlias = str | bool | int | float | Decimal | date | datetime | None

_COLUMN_TESTS = ("becomes", "equals", "in", "is_null")
_COMBINATORS = ("all", "any", "not")


class Condition(BaseModel):
    """One node of a condition tree; exactly one shape per node (checked below).

    A single model with optional keys rather than a union of models: pydantic then
    reports a typo as "unknown key 'colum'" at the right place instead of one
    error per union member.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str | None = Field(default=None, description="column the test reads")
    becomes: Scalar = Field(
        default=None,
        description="after == value and (before != value, or the row is new: op c/r)",
    )
    equals: Scalar = Field(default=None, description="after == value")
    in_: list[Scalar] | None = Field(default=None, alias="in", description="after in values")
    is_null: bool | None = Field(default=None, description="after is (not) NULL")
    row: Literal["after", "before"] = Field(
        default="after", description="which row image `equals`/`in`/`is_null` read"
    )
    changed: list[str] | None = Field(
        default=None, description="true when any of these columns differ between before and after"
    )
    all_: list[Condition] | None = Field(default=None, alias="all")
    any_: list[Condition] | None = Field(default=None, alias="any")
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_shape(self) -> Condition:
        given = self.model_fields_set
        tests = [
            name for name, attr in (("becomes", "becomes"), ("equals", "equals"),
                                    ("in", "in_"), ("is_null", "is_null"))
            if attr in given
        ]
        combos = [
            name for name, attr in (("all", "all_"), ("any", "any_"), ("not", "not_"))
            if attr in given
        ]
        changed = "changed" in given
        if self.column is not None:
            if len(tests) != 1 or combos or changed:
                got = ", ".join(tests + combos + (["changed"] if changed else [])) or "none"
                raise ValueError(
                    f"a column test needs `column` and exactly one of {', '.join(_COLUMN_TESTS)}"
                    f" (got {got})"
                )
            if tests[0] == "is_null" and self.is_null is None:
                raise ValueError("is_null must be true or false")
            if tests[0] == "becomes" and "row" in given:
                raise ValueError("`row` does not apply to `becomes` (it reads both images)")
            return self
        if tests:
            raise ValueError(f"`{tests[0]}` needs a `column` to test")
        if "row" in given:
            raise ValueError("`row` only applies to a column test")
        shapes = combos + (["changed"] if changed else [])
        if len(shapes) != 1:
            raise ValueError(
                "a condition is one of: {column: .., becomes|equals|in|is_null: ..}, "
                "{changed: [..]}, {all: [..]}, {any: [..]}, {not: {..}}"
                + (f" (got {', '.join(shapes)} together)" if shapes else " (got an empty mapping)")
            )
        if changed and not self.changed:
            raise ValueError("`changed` needs at least one column")
        if (self.all_ is not None and not self.all_) or (self.any_ is not None and not self.any_):
            raise ValueError(f"`{shapes[0]}` needs at least one condition")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return compact_dump(self, handler)

    def columns(self) -> set[str]:
        """Every column the condition reads; `check-config --live` verifies they exist."""
        found: set[str] = set()
        if self.column is not None:
            found.add(self.column)
        found.update(self.changed or ())
        for child in (*(self.all_ or ()), *(self.any_ or ()), *((self.not_,) if self.not_ else ())):
            found |= child.columns()
        return found

    def describe(self) -> str:
        """Readable form used in decision reasons and `check-config` output."""
        if self.column is not None:
            if "becomes" in self.model_fields_set:
                return f"{self.column} becomes {self.becomes!r}"
            prefix = f"{self.column}" if self.row == "after" else f"before.{self.column}"
            if "equals" in self.model_fields_set:
                return f"{prefix} = {self.equals!r}"
            if "in_" in self.model_fields_set:
                return f"{prefix} in {self.in_!r}"
            return f"{prefix} is {'null' if self.is_null else 'not null'}"
        if self.changed is not None:
            return f"changed({', '.join(self.changed)})"
        if self.all_ is not None:
            return "(" + " and ".join(c.describe() for c in self.all_) + ")"
        if self.any_ is not None:
            return "(" + " or ".join(c.describe() for c in self.any_) + ")"
        assert self.not_ is not None
        return f"not {self.not_.describe()}"


def compact_dump(model: BaseModel, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
    """Dump only the keys that were written, so printed configs read like the YAML."""
    data: dict[str, object] = handler(model)
    keep: set[str] = set()
    for name in model.model_fields_set:
        info = type(model).model_fields[name]
        keep.update({name, info.alias} if info.alias else {name})
    return {k: v for k, v in data.items() if k in keep}


class Truth(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"


# Enum member access costs ~0.2 us on Python 3.11; evaluation compares module constants.
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
    is_null = value is None
    wanted = bool(c.is_null)
    return _outcome(
        is_null == wanted,
        f"{label} is {'null' if wanted else 'not null'}",
        f"{label} is {'null' if is_null else _fmt(value)}",
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
        if before == target if text_target and type(before) is str else same_value(
            before, target
        ):
            return already
        return became

    return check


def _impossible() -> Outcome:  # pragma: no cover - _read reports every case checked above
    raise AssertionError("a column read failed without a reason")
