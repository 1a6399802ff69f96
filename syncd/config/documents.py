"""The DBAs' document mappings: tables, conditions, header and line mappings, write-back."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import (
    Any,
    TypeAlias,
)

from pydantic import (
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from stdnum.cn import uscc

from syncd.config.base import (
    _IDENT,
    _QUALIFIED_TABLE,
    StrictModel,
)
from syncd.config.conditions import INVOICE_COLUMNS, INVOICE_PREFIX, Condition, compact_dump
from syncd.config.related import (
    Relations,
    WhereValue,
    check_columns,
    check_field_references,
    check_relations,
    split_reference,
)

Scalar: TypeAlias = str | bool | int | float | Decimal | None
#: `{order_no}`, or `{party.name}`: a column of a related row (syncd.config.related)
_TEMPLATE_REF = re.compile(r"\{(" + _IDENT + r"(?:\." + _IDENT + r")?)\}")


class FieldSource(StrictModel):
    """Where one invoice field comes from.

    Written as a bare string (a column name), a bare non-string scalar (a
    constant), or a mapping: `{column: c}`, `{const: v}`, `{template: "SO {order_no}"}`
    (only `{column}` substitutions, nothing else), with optional `map` (translate
    ERP values, e.g. `{true: TAX_INCLUSIVE}`) and `default` (used for NULL / unmapped).
    """

    column: str | None = None
    const: Scalar = None
    template: str | None = None
    map: dict[str | bool | int, Scalar] | None = None
    default: Scalar = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: object) -> object:
        if isinstance(data, str):
            return {"column": data}
        if data is None or isinstance(data, bool | int | float | Decimal):
            return {"const": data}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSource:
        given = [k for k in ("column", "const", "template") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of column, const, template"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.template is not None and not _TEMPLATE_REF.search(self.template):
            raise ValueError("a template must reference at least one {column}")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return compact_dump(self, handler)

    def columns(self) -> set[str]:
        if self.column is not None:
            return {self.column}
        if self.template is not None:
            return set(_TEMPLATE_REF.findall(self.template))
        return set()

    @classmethod
    def constant(cls, value: Scalar) -> FieldSource:
        return cls(const=value)


def _const(value: Scalar) -> Any:
    return Field(default_factory=lambda: FieldSource.constant(value))


class SellerIdentity(StrictModel):
    name: str = Field(min_length=1)
    tax_id: str
    address: str | None = None
    phone: str | None = None
    bank_name: str | None = None
    bank_account: str | None = None

    @field_validator("tax_id")
    @classmethod
    def _uscc(cls, value: str) -> str:
        if not uscc.is_valid(value):
            raise ValueError(
                f"'{value}' is not a valid unified social credit code "
                "(18 characters, GB 32100-2015 check character)"
            )
        return str(uscc.compact(value))


class AccountChoice(StrictModel):
    """Which issuer account (legal entity) issues a row: the row's `column` looked up in
    `map` (`{1: sh, 2: bj}`). The account also supplies the seller printed on the
    invoice; a value missing from the map is refused per document (the reason written
    back), never guessed."""

    column: str = Field(pattern=r"^" + _IDENT + r"$", description="the row's company column")
    map: dict[str | int, str] = Field(
        min_length=1, description="column value -> issuer account name (a key of issuers:)"
    )

    @field_validator("map")
    @classmethod
    def _keys(cls, value: dict[str | int, str]) -> dict[str | int, str]:
        # Row values arrive as int or str; compare by text so `1` and `"1"` are one key.
        seen: dict[str, str | int] = {}
        for key in value:
            if isinstance(key, bool):
                raise ValueError(f"{key}: map keys are company values (numbers or text)")
            text = str(key)
            if text in seen:
                raise ValueError(f"{seen[text]!r} and {key!r} are the same company value")
            seen[text] = key
        return value

    def account_of(self, value: object) -> str | None:
        """The account name for the row's column value, or None when it is not mapped."""
        if value is None or isinstance(value, bool):
            return None
        return self._by_text().get(str(value))

    def _by_text(self) -> dict[str, str]:
        return {str(k): v for k, v in self.map.items()}


class BuyerMapping(StrictModel):
    name: FieldSource
    tax_id: FieldSource | None = None
    address: FieldSource | None = None
    phone: FieldSource | None = None
    bank_name: FieldSource | None = None
    bank_account: FieldSource | None = None
    email: FieldSource | None = None
    natural_person: FieldSource = _const(False)


class HeaderMapping(StrictModel):
    buyer: BuyerMapping
    invoice_type: FieldSource = Field(
        default_factory=lambda: FieldSource.constant("ORDINARY"), description="SPECIAL | ORDINARY"
    )
    price_basis: FieldSource = Field(
        default_factory=lambda: FieldSource.constant("TAX_EXCLUSIVE"),
        description="TAX_EXCLUSIVE | TAX_INCLUSIVE",
    )
    currency: FieldSource = _const("CNY")
    remark: FieldSource | None = None
    drawer: FieldSource | None = None
    payee: FieldSource | None = None
    reviewer: FieldSource | None = None
    issue_date: FieldSource | None = None
    reversal_reason: FieldSource = Field(
        default_factory=lambda: FieldSource.constant("INVOICING_ERROR"),
        description="SALES_RETURN | INVOICING_ERROR | SERVICE_STOPPED | ALLOWANCE (red invoices)",
    )

    def sources(self) -> dict[str, FieldSource]:
        """Every mapped field by dotted name, for checks and error messages."""
        out: dict[str, FieldSource] = {}
        for name, value in self:
            if isinstance(value, FieldSource):
                out[name] = value
        for name, value in self.buyer:
            if isinstance(value, FieldSource):
                out[f"buyer.{name}"] = value
        return out


class LineColumns(StrictModel):
    name: FieldSource
    tax_code: FieldSource
    spec: FieldSource | None = None
    unit: FieldSource | None = None
    quantity: FieldSource
    unit_price: FieldSource
    tax_rate: FieldSource
    discount_amount: FieldSource | None = None
    tax_policy: FieldSource | None = None

    def sources(self) -> dict[str, FieldSource]:
        return {name: value for name, value in self if isinstance(value, FieldSource)}


class TaxRateUnit(enum.StrEnum):
    FRACTION = "fraction"  # 0.13
    PERCENT = "percent"  # 13


class LinesConfig(StrictModel):
    """Lines are read from the ERP at issue time, not from their own topic: order
    and lines arrive on different topics with no ordering between them."""

    table: str = Field(pattern=_QUALIFIED_TABLE.pattern, description="schema.table")
    foreign_key: str = Field(description="column of the line table pointing at the document")
    references: str | None = Field(
        default=None, description="document column the foreign key holds (default: the key column)"
    )
    order_by: str = Field(description="column giving the line order (e.g. line_no)")
    tax_rate_unit: TaxRateUnit = TaxRateUnit.FRACTION
    columns: LineColumns
    # --- packaged-ERP schemas (syncd.config.related) ---
    where: dict[str, WhereValue] = Field(
        default_factory=dict,
        description="only line rows whose columns hold these values (e.g. {type: line})",
    )
    related: Relations = Field(
        default_factory=dict, description="rows reached from each line: <name>.<column>"
    )

    def reads(self) -> set[str]:
        """Every column (or <relation>.<column>) the line fields read."""
        return {c for src in self.columns.sources().values() for c in src.columns()}


class StatusValues(StrictModel):
    """Values written to the ERP's status column, per syncd state."""

    pending: str = "PENDING"
    issued: str = "ISSUED"
    invalid: str = "INVALID"
    rejected: str = "REJECTED"
    blocked: str = "BLOCKED"
    dead: str = "DEAD"
    reversal_pending: str = "REVERSAL_PENDING"
    reversed: str = "REVERSED"


class WriteBackColumns(StrictModel):
    invoice_no: str
    status: str | None = None
    error: str | None = None
    issued_at: str | None = None
    url: str | None = None
    #: one link per file format, when the platform gives them (Nuonuo: PDF, OFD, XML)
    pdf_url: str | None = None
    ofd_url: str | None = None
    xml_url: str | None = None
    red_invoice_no: str | None = None

    def mapped(self) -> dict[str, str]:
        return {name: col for name, col in self if isinstance(col, str)}


class WriteBackConfig(StrictModel):
    table: str | None = Field(
        default=None, pattern=_QUALIFIED_TABLE.pattern, description="default: the source table"
    )
    key_columns: list[str] | None = Field(default=None, description="default: the document key")
    columns: WriteBackColumns
    status_values: StatusValues = Field(default_factory=StatusValues)
    incidental_columns: list[str] = Field(
        default_factory=list,
        description="columns the ERP changes along with syncd's write-back "
        "(e.g. a trigger-maintained updated_at); they do not make a change count as new",
    )
    # --- side tables owned by the integration (packaged ERPs whose tables stay unaltered) ---
    upsert: bool = Field(
        default=False,
        description="insert the row when the key has none yet (a side table of syncd's own; "
        "needs a unique constraint on key_columns)",
    )
    migration: str | None = Field(
        default=None,
        description="idempotent SQL that creates the side table; `syncd migrate` (and "
        "pipeline.migrate_on_start) runs it after the ledger's migrations",
    )


class ReturnWriteBackColumns(StrictModel):
    red_invoice_no: str = Field(description="the partial red invoice's number")
    status: str | None = None
    error: str | None = None


class ReturnsConfig(StrictModel):
    """Partial red-letter invoices (returns): each row of `table` is one return document.

    A row that satisfies `qualifies` returns `quantity` units of one line of the
    document's current blue invoice: a red invoice for just that line and quantity,
    referencing the original, under the row's own serial. The returned quantities of a
    line never add up to more than the blue invoice's.
    """

    table: str = Field(pattern=_QUALIFIED_TABLE.pattern, description="schema.table")
    topic: str | None = Field(default=None, description="default: <topic_prefix>.<schema>.<table>")
    key_columns: list[str] = Field(default_factory=lambda: ["id"], min_length=1)
    document_key: str = Field(
        description="column holding the key of the document whose invoice is returned against"
    )
    line: str = Field(
        description="column holding the returned line's `lines.order_by` value (e.g. line_no)"
    )
    quantity: str = Field(description="column holding the returned quantity (positive)")
    qualifies: Condition
    reversal_reason: FieldSource = Field(
        default_factory=lambda: FieldSource.constant("SALES_RETURN"),
        description="SALES_RETURN | INVOICING_ERROR | SERVICE_STOPPED | ALLOWANCE",
    )
    write_back: ReturnWriteBackColumns
    status_values: StatusValues = Field(default_factory=StatusValues)

    def own_columns(self) -> set[str]:
        cols = self.write_back
        return {c for c in (cols.red_invoice_no, cols.status, cols.error) if c is not None}

    def source_columns(self) -> set[str]:
        cols = {*self.key_columns, self.document_key, self.line, self.quantity}
        return cols | self.qualifies.columns() | self.reversal_reason.columns()


class CreditNotesConfig(StrictModel):
    """Credit notes kept in the document table itself: the row's kind decides.

    A packaged ERP keeps invoices and credit notes in one table (Tryton: `account_invoice`,
    a posted credit note has `sequence_type_cache = credit_note`). A row that satisfies
    `qualifies` is a credit note, never a blue invoice: one red invoice, under the credit
    note's own serial, referencing the invoice of the document it credits. Which document
    and which of its lines, and how many units, is read from the credit note's lines
    (`lines:` of this document, with their `lines.related`): `original` is the credited
    document's key, `line` the credited line's `lines.order_by` value, `quantity` the
    credited units (the sign is ignored: a credit note's are negative). All lines must credit
    the same document; the red amounts come from the frozen blue invoice, as for `returns`.
    """

    qualifies: Condition
    original: str = Field(
        description="per credit-note line: the credited document's key "
        "(a line column or <lines.related relation>.<column>)"
    )
    line: str = Field(
        description="per credit-note line: the credited line's lines.order_by value "
        "(a line column or <lines.related relation>.<column>)"
    )
    quantity: str = Field(description="per credit-note line: the credited units (a line column)")
    reversal_reason: FieldSource = Field(
        default_factory=lambda: FieldSource.constant("SALES_RETURN"),
        description="SALES_RETURN | INVOICING_ERROR | SERVICE_STOPPED | ALLOWANCE "
        "(read from the credit note row)",
    )

    def line_reads(self) -> set[str]:
        """The line columns (or `<relation>.<column>`) read per credit-note line."""
        return {self.original, self.line, self.quantity}

    def source_columns(self) -> set[str]:
        return self.qualifies.columns() | self.reversal_reason.columns()


class TaxPeriod(enum.StrEnum):
    """A tax period a red invoice must stay within (`red_limits.same_period`)."""

    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class RedLimits(StrictModel):
    """Time and count limits on red-letter invoices (full and partial) against one blue
    invoice, checked before anything is sent (`syncd.rules.limits`); a red invoice that
    breaks one is refused with the reason written back. Dates are the platform's (UTC+8)."""

    within_days: int | None = Field(
        default=None,
        ge=0,
        description="red invoices only until N days after the blue invoice's issue date",
    )
    same_period: TaxPeriod | None = Field(
        default=None,
        description="month | quarter | year: red invoices only within the blue invoice's "
        "tax period",
    )
    max_reds_per_invoice: int | None = Field(
        default=None,
        ge=1,
        description="red invoices (full and partial together) allowed against one blue invoice",
    )


class SnapshotPolicy(enum.StrEnum):
    """What to do with `op=r` rows (the connector's initial snapshot of history)."""

    IGNORE = "ignore"
    ISSUE_IF_UNINVOICED = "issue_if_uninvoiced"


class DocumentConfig(StrictModel):
    table: str = Field(pattern=_QUALIFIED_TABLE.pattern, description="schema.table")
    topic: str | None = Field(default=None, description="default: <topic_prefix>.<schema>.<table>")
    key_columns: list[str] = Field(default_factory=lambda: ["id"], min_length=1)
    qualifies: Condition
    reverses: Condition | None = None
    approval: Condition | None = Field(
        default=None,
        description="documents matching it wait in AWAITING_APPROVAL for `syncd approve` "
        "(may read invoice.gross, invoice.net, invoice.tax, invoice.type, invoice.lines)",
    )
    reissues: Condition | None = Field(
        default=None,
        description="after a full reversal, the change that issues the next revision "
        "(a new blue invoice under its own serial); never a second blue invoice otherwise",
    )
    max_reissues_per_day: int | None = Field(
        default=None,
        ge=0,
        description="re-issues (revisions after a full reversal) of one document allowed "
        "within 24 h, as platforms limit them; more are refused with the reason written back",
    )
    returns: ReturnsConfig | None = Field(
        default=None, description="partial red-letter invoices from a return table"
    )
    credit_notes: CreditNotesConfig | None = Field(
        default=None,
        description="rows of this table that are credit notes: a red invoice each, "
        "referencing the credited document's invoice",
    )
    red_limits: RedLimits = Field(
        default_factory=RedLimits,
        description="time and count limits on red invoices, checked before sending",
    )
    snapshot: SnapshotPolicy = SnapshotPolicy.ISSUE_IF_UNINVOICED
    period_column: str | None = Field(
        default=None,
        pattern=r"^" + _IDENT + r"$",
        description="column of the document table that dates a document (e.g. order_date): "
        "`syncd reconcile --from/--to` selects ERP rows by it (default: every row)",
    )
    header: HeaderMapping
    seller: SellerIdentity | None = None
    account: str | AccountChoice | None = Field(
        default=None,
        description="the issuer account (issuers: key) of every row, or {column, map} to "
        "choose it per row; needed when several accounts are configured",
    )
    lines: LinesConfig
    write_back: WriteBackConfig
    # --- packaged-ERP schemas (syncd.config.related) ---
    related: Relations = Field(
        default_factory=dict,
        description="rows reached from the document row by foreign key: <name>.<column>",
    )

    _name: str = PrivateAttr(default="")
    _returns_view: DocumentConfig | None = PrivateAttr(default=None)
    #: account name -> the seller it issues as (set by SyncdConfig from `issuers:`)
    _account_sellers: dict[str, SellerIdentity] = PrivateAttr(default_factory=dict)

    def seller_for(self, row: Mapping[str, Any]) -> SellerIdentity | str:
        """The seller of this row's invoice: its account's seller when `account` chooses
        one per row, else `seller`. A text answer is the reason the row has no account."""
        choice = self.account
        if isinstance(choice, AccountChoice):
            value = row.get(choice.column)
            name = choice.account_of(value)
            if name is None:
                return (
                    f"{choice.column} = {value!r} maps to no issuer account "
                    f"(documents.{self.name}.account.map)"
                )
            seller = self._account_sellers.get(name)
            if seller is not None:
                return seller
        elif choice is not None and choice in self._account_sellers:
            return self._account_sellers[choice]
        assert self.seller is not None  # resolved by SyncdConfig
        return self.seller

    @property
    def name(self) -> str:
        """The document type name (the key under `documents`).

        Read from pydantic's private-attribute dict directly: `self._name` goes through
        BaseModel.__getattr__ after a failed normal lookup, microseconds per call, and
        the intake asks for it several times per document.
        """
        private = self.__pydantic_private__
        return str(private["_name"]) if private is not None else self._name

    def for_table(self, table: str) -> DocumentConfig:
        """The config a ledger row of `table` is written back with: this one, or for a
        row of the return table the returns view (`returns_view`)."""
        if self.returns is not None and table == self.returns.table:
            return self.returns_view()
        return self

    def returns_view(self) -> DocumentConfig:
        """This document type as seen from its return table: same name, the return table
        as source and write-back target (the red number in `returns.write_back`)."""
        assert self.returns is not None
        private = self.__pydantic_private__ or {}
        view = private.get("_returns_view")
        if view is None:
            r = self.returns
            write_back = WriteBackConfig(
                table=r.table,
                key_columns=list(r.key_columns),
                columns=WriteBackColumns(
                    invoice_no=r.write_back.red_invoice_no,
                    red_invoice_no=r.write_back.red_invoice_no,
                    status=r.write_back.status,
                    error=r.write_back.error,
                ),
                status_values=r.status_values,
            )
            view = self.model_copy(
                update={
                    "table": r.table,
                    "topic": r.topic,
                    "key_columns": list(r.key_columns),
                    "write_back": write_back,
                    "reverses": None,
                    "reissues": None,
                    "returns": None,
                }
            )
            view._name = self.name
            self._returns_view = view
        return view

    @property
    def write_back_table(self) -> str:
        return self.write_back.table or self.table

    @property
    def write_back_keys(self) -> list[str]:
        return self.write_back.key_columns or self.key_columns

    @property
    def writes_back_to_source(self) -> bool:
        return self.write_back_table == self.table

    def own_columns(self) -> set[str]:
        """Columns syncd itself writes in the source table (its own changes must not
        re-trigger a decision)."""
        if not self.writes_back_to_source:
            return set()
        return set(self.write_back.columns.mapped().values()) | set(
            self.write_back.incidental_columns
        )

    def header_reads(self) -> set[str]:
        """Every column (or <relation>.<column>) the header fields read."""
        return {c for src in self.header.sources().values() for c in src.columns()}

    def source_columns(self) -> set[str]:
        """Every source-table column the config reads (not those of related rows)."""
        cols = set(self.key_columns) | self.qualifies.columns()
        if self.reverses is not None:
            cols |= self.reverses.columns()
        if self.approval is not None:
            cols |= {c for c in self.approval.columns() if not c.startswith(INVOICE_PREFIX)}
        if self.reissues is not None:
            cols |= self.reissues.columns()
        if self.credit_notes is not None:
            cols |= self.credit_notes.source_columns()
        reads = self.header_reads()
        for relation in self.related.values():
            reads.update(relation.references())
        cols |= {c for c in reads if "." not in c}
        if self.lines.references:
            cols.add(self.lines.references)
        if isinstance(self.account, AccountChoice):
            cols.add(self.account.column)
        return cols

    def line_reads(self) -> set[str]:
        """Every line column (or <relation>.<column>) read: the invoice lines' and the
        credit notes' (`credited.invoice`)."""
        reads = self.lines.reads()
        if self.credit_notes is not None:
            reads |= self.credit_notes.line_reads()
        return reads

    @field_validator("qualifies", "reverses")
    @classmethod
    def _no_invoice_columns(cls, cond: Condition | None) -> Condition | None:
        used = sorted(c for c in (cond.columns() if cond else ()) if c.startswith(INVOICE_PREFIX))
        if used:
            raise ValueError(
                f"{used[0]}: the invoice is built after this condition is decided; "
                "invoice.* columns can only be read by `approval`"
            )
        return cond

    @field_validator("approval")
    @classmethod
    def _known_invoice_columns(cls, cond: Condition | None) -> Condition | None:
        for col in sorted(cond.columns() if cond else ()):
            if col.startswith(INVOICE_PREFIX) and col not in INVOICE_COLUMNS:
                raise ValueError(
                    f"unknown invoice column {col} (known: {', '.join(INVOICE_COLUMNS)})"
                )
        return cond

    @model_validator(mode="after")
    def _consistent(self) -> DocumentConfig:
        if self.lines.references is None:
            if len(self.key_columns) != 1:
                raise ValueError("lines.references is required when the key has several columns")
            self.lines.references = self.key_columns[0]
        if self.lines.table == self.table:
            raise ValueError("lines.table must differ from the document table")
        if self.returns is not None:
            if self.returns.table in (self.table, self.lines.table):
                raise ValueError("returns.table must differ from the document and line tables")
            if len(self.key_columns) != 1:
                raise ValueError("returns needs a document with a one-column key")
        check_relations(self.related, "related")
        check_field_references(self.header_reads(), self.related, "header")
        check_relations(self.lines.related, "lines.related")
        check_field_references(self.lines.reads(), self.lines.related, "lines.columns")
        check_columns(list(self.lines.where), "lines.where")
        if self.credit_notes is not None:
            credit = self.credit_notes
            if len(self.key_columns) != 1 or self.lines.references != self.key_columns[0]:
                raise ValueError(
                    "credit_notes needs a one-column key that the lines refer to "
                    "(lines.references = the key column)"
                )
            check_columns([credit.quantity], "credit_notes.quantity")
            for what, ref in (("original", credit.original), ("line", credit.line)):
                try:
                    split_reference(ref)
                except ValueError as exc:
                    raise ValueError(f"credit_notes.{what}: {exc}") from None
            check_field_references(credit.line_reads(), self.lines.related, "credit_notes")
        keys = self.write_back.key_columns
        if keys is not None and self.write_back_table == self.table and keys != self.key_columns:
            raise ValueError("write_back.key_columns must equal key_columns on the source table")
        if self.write_back.upsert or self.write_back.migration:
            if self.write_back_table in (self.table, self.lines.table):
                raise ValueError(
                    "write_back.upsert and write_back.migration are for a side table of "
                    "syncd's own: write_back.table must differ from table and lines.table"
                )
            if self.write_back.migration is not None and not self.write_back.migration.strip():
                raise ValueError("write_back.migration is empty")
        if self.snapshot is SnapshotPolicy.ISSUE_IF_UNINVOICED and not self.writes_back_to_source:
            raise ValueError(
                "snapshot: issue_if_uninvoiced needs the invoice number in the source row "
                "(write_back.table = table) to tell invoiced rows apart; use snapshot: ignore"
            )
        return self


__all__ = [
    "BuyerMapping",
    "CreditNotesConfig",
    "DocumentConfig",
    "FieldSource",
    "HeaderMapping",
    "LineColumns",
    "LinesConfig",
    "ReturnWriteBackColumns",
    "ReturnsConfig",
    "Scalar",
    "SellerIdentity",
    "SnapshotPolicy",
    "StatusValues",
    "TaxRateUnit",
    "WriteBackColumns",
    "WriteBackConfig",
]
