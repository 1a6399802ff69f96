"""`red_forms:` -- red-letter forms raised by buyers.

See docs/configuration.md, "Red-letter forms raised by the buyer".

How often the daemon asks the platform for forms waiting for us, and where the outcome of
each form goes in the ERP: one row per form in a table the DBA names, keyed by the form id,
with the columns the DBA maps. Column names are identifiers, checked here; whether the table
and columns exist is checked against the live database by `syncd check-config`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from syncd.config.base import _IDENT, _QUALIFIED_TABLE, StrictModel

_COLUMN = Field(default=None, pattern=rf"^{_IDENT}$")


class RedFormColumns(StrictModel):
    """Outcome field -> ERP column; unmapped fields are not written."""

    status: str = Field(pattern=rf"^{_IDENT}$", description="PENDING/CONFIRMED/... (status_values)")
    original_invoice_no: str | None = _COLUMN
    document_type: str | None = _COLUMN
    document_key: str | None = _COLUMN
    reason: str | None = _COLUMN
    deadline: str | None = _COLUMN
    decided_at: str | None = _COLUMN
    decided_by: str | None = _COLUMN
    decision_reason: str | None = _COLUMN
    red_invoice_no: str | None = _COLUMN
    red_issued_at: str | None = _COLUMN

    def mapped(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class RedFormStatusValues(StrictModel):
    pending: str = "PENDING"
    confirmed: str = "CONFIRMED"
    issued: str = "ISSUED"
    rejected: str = "REJECTED"
    expired: str = "EXPIRED"


class RedFormWriteBack(StrictModel):
    table: str = Field(pattern=_QUALIFIED_TABLE.pattern, description="schema.table")
    key_column: str = Field(
        default="form_id",
        pattern=rf"^{_IDENT}$",
        description="holds the platform's form id; needs a unique constraint (upsert)",
    )
    columns: RedFormColumns
    status_values: RedFormStatusValues = Field(default_factory=RedFormStatusValues)

    @model_validator(mode="after")
    def _distinct(self) -> RedFormWriteBack:
        names = [self.key_column, *self.columns.mapped().values()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"column(s) {', '.join(repeated)} mapped more than once; each outcome field "
                "(and key_column) needs its own column"
            )
        return self


class RedFormsSettings(StrictModel):
    poll_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description="how often the daemon lists the forms buyers raised; 0 turns discovery off",
    )
    write_back: RedFormWriteBack | None = Field(
        default=None, description="where each form's outcome goes in the ERP (unset: nowhere)"
    )


__all__ = ["RedFormColumns", "RedFormStatusValues", "RedFormWriteBack", "RedFormsSettings"]
