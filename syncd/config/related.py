"""Related rows: invoice fields that live one or more foreign keys away from the row syncd reads.

A packaged ERP keeps the buyer in a party table, its tax number in an identifier table and a
line's tax rate behind a many-to-many table. A DBA names each such row once, under
`related:` (of a document, for the header; of `lines`, per line), and then reads its columns
as `<name>.<column>` in any field:

    related:
      party:   {table: public.party_party, join: {id: party}}
      uscc:    {table: public.party_identifier, join: {party: party.id}, where: {type: cn_vat}}
      tax:     {table: public.account_tax, where: {type: percentage},
                through: {table: public.account_invoice_line-account_tax,
                          join: {line: id}, key: {id: tax}}}

`join` pairs a column of the related table with a column of the row (or `<earlier>.<column>`
of a relation named before it); `reference: <model>` says the row's value is a reference
`<model>,<id>` (Tryton's and Odoo's `Reference` fields, e.g. a credit note line's `origin` =
`account.invoice.line,42`): only values of that model are followed, by their id; `where`
adds constant filters (a list means "one of", null means IS NULL); `through` reaches the
related table over a link table. This is data, never code: identifiers are checked here and
quoted by the dialect where the SQL is built (`syncd.erp.related`), values are bound parameters.

Cardinality is part of the meaning, and a violation is a readable problem on the document,
never a guess: a direct relation yields at most one row (none: its columns read as NULL);
a `through` relation yields exactly one (a line with two VAT taxes, or none, cannot be
invoiced). `Unresolved` is the value a field then reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from pydantic import Field, model_validator

from syncd.config.base import _IDENT, StrictModel

#: Packaged ERPs name tables with characters a bare identifier refuses (Tryton's link
#: tables: `account_invoice_line-account_tax`); they are quoted when the SQL is built.
_NAME = r"[A-Za-z_][A-Za-z0-9_$-]*"
RELATED_TABLE = re.compile(rf"^{_NAME}\.{_NAME}$")
_COLUMN = re.compile(rf"^{_IDENT}$")
#: A reference to a value of the row, or of a relation named earlier: `party` or `party.id`.
_REFERENCE = re.compile(rf"^(?:({_IDENT})\.)?({_IDENT})$")

WhereValue: TypeAlias = str | bool | int | Decimal | list[str | bool | int | Decimal] | None


def split_reference(reference: str) -> tuple[str | None, str]:
    """`party.id` -> ("party", "id"); `party` -> (None, "party")."""
    match = _REFERENCE.match(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not a column or <relation>.<column>")
    return match.group(1), match.group(2)


def check_columns(names: list[str], what: str) -> None:
    for name in names:
        if not _COLUMN.match(name):
            raise ValueError(f"{what}: {name!r} is not a column name")


class LinkTable(StrictModel):
    """The many-to-many table between the row and the related table."""

    table: str = Field(pattern=RELATED_TABLE.pattern, description="schema.table of the links")
    join: dict[str, str] = Field(
        min_length=1, description="link column -> column of the row (or <relation>.<column>)"
    )
    key: dict[str, str] = Field(
        min_length=1, description="column of the related table -> link column"
    )

    @model_validator(mode="after")
    def _names(self) -> LinkTable:
        check_columns([*self.join, *self.key, *self.key.values()], "through")
        for reference in self.join.values():
            split_reference(reference)
        return self


class RelatedTable(StrictModel):
    """One row reached from the document row (header) or from a line row (lines)."""

    table: str = Field(pattern=RELATED_TABLE.pattern, description="schema.table")
    join: dict[str, str] | None = Field(
        default=None,
        description="column of the related table -> column of the row (or <relation>.<column>)",
    )
    through: LinkTable | None = Field(default=None, description="a many-to-many link table")
    where: dict[str, WhereValue] = Field(
        default_factory=dict, description="constant filters: value, [values] or null"
    )
    reference: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
        description="the row's join value is a reference `<model>,<id>`: follow those of "
        "this model by their integer id (others have no related row)",
    )

    @model_validator(mode="after")
    def _shape(self) -> RelatedTable:
        if (self.join is None) == (self.through is None):
            raise ValueError("give exactly one of join (a foreign key) or through (a link table)")
        if self.join is not None:
            if not self.join:
                raise ValueError("join needs at least one column pair")
            check_columns(list(self.join), "join")
            for reference in self.join.values():
                split_reference(reference)
        if self.reference is not None and (self.join is None or len(self.join) != 1):
            raise ValueError("reference needs a join of exactly one column")
        check_columns(list(self.where), "where")
        return self

    def join_value(self, value: object) -> object:
        """The value to join on: `value` itself, or for a `reference` relation the id of
        `<model>,<id>` (None, i.e. no related row, for another model or a malformed one)."""
        if self.reference is None or value is None or isinstance(value, Unresolved):
            return value
        model, comma, ident = str(value).partition(",")
        if not comma or model != self.reference or not ident.isdigit():
            return None
        return int(ident)

    @property
    def exactly_one(self) -> bool:
        """A link table must give exactly one row; a foreign key at most one."""
        return self.through is not None

    def references(self) -> list[str]:
        """The row values (`col` or `<relation>.<col>`) this relation's key is made of."""
        if self.through is not None:
            return list(self.through.join.values())
        assert self.join is not None
        return list(self.join.values())


Relations: TypeAlias = dict[str, RelatedTable]


def check_relations(relations: Relations, where: str) -> None:
    """Each relation may only build on relations named before it (no cycles, no typos)."""
    seen: set[str] = set()
    for name, relation in relations.items():
        if not _COLUMN.match(name):
            raise ValueError(f"{where}.{name}: a relation name is a plain identifier")
        for reference in relation.references():
            alias, _column = split_reference(reference)
            if alias is not None and alias not in seen:
                known = ", ".join(sorted(seen)) or "none before it"
                raise ValueError(
                    f"{where}.{name}: {reference!r} names no relation defined before it "
                    f"(known: {known})"
                )
        seen.add(name)


def check_field_references(columns: set[str], relations: Relations, where: str) -> None:
    """Every dotted column a mapping reads names a relation."""
    for column in sorted(columns):
        alias, _ = split_reference(column) if _REFERENCE.match(column) else (None, column)
        if alias is not None and alias not in relations:
            known = ", ".join(relations) or "none"
            raise ValueError(
                f"{where}: {column!r} reads relation {alias!r}, which is not under related "
                f"(known: {known})"
            )


def needed_columns(relations: Relations, reads: set[str]) -> dict[str, list[str]]:
    """Per relation, the columns to select: the ones fields read plus the ones later
    relations build their keys on. Always at least one, so a missing row is visible."""
    wanted: dict[str, set[str]] = {name: set() for name in relations}
    references = set(reads)
    for relation in relations.values():
        references.update(relation.references())
    for reference in references:
        if not _REFERENCE.match(reference):
            continue
        alias, column = split_reference(reference)
        if alias is not None and alias in wanted:
            wanted[alias].add(column)
    return {name: sorted(columns) for name, columns in wanted.items()}


@dataclass(frozen=True, slots=True)
class Unresolved:
    """What `<relation>.<column>` reads when the relation did not give the row it must:
    several rows where at most one may be, or none where exactly one must be."""

    reason: str

    def __str__(self) -> str:
        return self.reason


__all__ = [
    "RELATED_TABLE",
    "LinkTable",
    "RelatedTable",
    "Relations",
    "Unresolved",
    "WhereValue",
    "check_columns",
    "check_field_references",
    "check_relations",
    "needed_columns",
    "split_reference",
]
