"""The condition language's schema: what a DBA may write under `qualifies`, `reverses`.

DBAs must be able to say "status becomes CONFIRMED" without anyone running
Python from a config file, so a condition is a tree of plain mappings, validated
here into `Condition` nodes -- there is no `eval`, no templating, no attribute
access. The language:

    {column: status, becomes: CONFIRMED}     # transition into a value
    {column: status, equals: CONFIRMED}      # state
    {column: status, in: [CONFIRMED, SHIPPED]}
    {column: invoice_no, is_null: true}
    {column: total_amount, above: 100000}    # also at_least, below, at_most (exact decimals)
    {changed: [status, total_amount]}        # any of these columns changed
    {all: [...]}, {any: [...]}, {not: {...}}

A document type's `approval` condition may also read the invoice syncd built, as the
pseudo-columns `invoice.gross`, `invoice.net`, `invoice.tax` (Decimal amounts),
`invoice.type` (SPECIAL | ORDINARY) and `invoice.lines` (the number of lines), e.g.
`{column: invoice.gross, above: 100000}`; `qualifies` and `reverses` are decided before
any invoice exists and may not.

What a condition *means* for a change event is `syncd.rules.conditions`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

Scalar: TypeAlias = str | bool | int | float | Decimal | date | datetime | None

_COLUMN_TESTS = ("becomes", "equals", "in", "is_null", "above", "at_least", "below", "at_most")
#: The comparisons: name -> (attribute, word used in reasons).
COMPARISONS: dict[str, str] = {
    "above": ">",
    "at_least": ">=",
    "below": "<",
    "at_most": "<=",
}
#: Prefix of the pseudo-columns an `approval` condition may read (the built invoice).
INVOICE_PREFIX = "invoice."
INVOICE_COLUMNS = ("invoice.gross", "invoice.net", "invoice.tax", "invoice.type", "invoice.lines")
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
    above: Decimal | None = Field(default=None, description="after > value (exact decimals)")
    at_least: Decimal | None = Field(default=None, description="after >= value")
    below: Decimal | None = Field(default=None, description="after < value")
    at_most: Decimal | None = Field(default=None, description="after <= value")
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
            name
            for name, attr in (
                ("becomes", "becomes"),
                ("equals", "equals"),
                ("in", "in_"),
                ("is_null", "is_null"),
                ("above", "above"),
                ("at_least", "at_least"),
                ("below", "below"),
                ("at_most", "at_most"),
            )
            if attr in given
        ]
        combos = [
            name
            for name, attr in (("all", "all_"), ("any", "any_"), ("not", "not_"))
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
            if tests[0] in COMPARISONS and self.comparison() is None:
                raise ValueError(f"{tests[0]} needs a number")
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

    def comparison(self) -> tuple[str, Decimal] | None:
        """(operator, bound) of an above/at_least/below/at_most test, else None."""
        for name, op in COMPARISONS.items():
            if name in self.model_fields_set:
                bound = getattr(self, name)
                return None if bound is None else (op, bound)
        return None

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
            if (cmp := self.comparison()) is not None:
                return f"{prefix} {cmp[0]} {cmp[1]}"
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
