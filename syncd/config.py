"""The one config file: daemon settings plus the DBAs' document mappings.

A DBA edits YAML, reviewed like code; SREs override single values with
`SYNCD_`-prefixed environment variables (`__` separates levels, e.g.
`SYNCD_KAFKA__BOOTSTRAP_SERVERS`), and secrets come from files -- either a
`*_file` key next to the secret, or a `secrets_dir` (a Kubernetes secret volume)
holding files named like the key path (`database__dsn`, `issuer__app_secret`).

Every model forbids unknown keys: a typo must fail loudly, with the file, the
line and a suggestion (`load_config` raises one `ConfigError` listing all
problems), rather than silently dropping a mapping and invoicing wrongly.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    TypeAlias,
    Union,
    get_args,
    get_origin,
)

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources import NestedSecretsSettingsSource
from stdnum.cn import uscc

from syncd.conditions import Condition, compact_dump

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUALIFIED_TABLE = re.compile(rf"^{_IDENT}\.{_IDENT}$")
_SECRET_KEY = re.compile(r"(password|secret|token|credential|private)", re.IGNORECASE)
_MASK = "**********"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def read_secret_file(path: Path) -> str:
    """Read a mounted secret; trailing newlines are an artefact of `echo > file`."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None


def _secret_from_file(
    value: SecretStr | None, file: Path | None, name: str, *, required: bool
) -> SecretStr | None:
    if value is not None and file is not None:
        raise ValueError(f"give either {name} or {name}_file, not both")
    if file is not None:
        return SecretStr(read_secret_file(file))
    if value is None and required:
        raise ValueError(f"{name} is required (or {name}_file pointing to a mounted secret)")
    return value


def mask_properties(props: Mapping[str, object]) -> dict[str, object]:
    """Mask values whose key looks secret (librdkafka / Connect passthrough maps)."""
    return {k: (_MASK if _SECRET_KEY.search(k) else v) for k, v in props.items()}


# --------------------------------------------------------------------------- daemon


class KafkaSettings(StrictModel):
    bootstrap_servers: str = Field(description="comma-separated host:port list")
    group_id: str = "syncd"
    topic_prefix: str = Field(description="the Debezium connector's topic.prefix")
    dead_letter_topic: str = "syncd.dead-letter"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    properties: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra librdkafka properties, passed through as is"
    )

    _TYPED: ClassVar[dict[str, str]] = {
        "bootstrap.servers": "bootstrap_servers",
        "group.id": "group_id",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "sasl.username": "sasl_username",
        "sasl.password": "sasl_password",
        "ssl.ca.location": "ssl_ca_location",
        "ssl.certificate.location": "ssl_certificate_location",
        "ssl.key.location": "ssl_key_location",
        "ssl.key.password": "ssl_key_password",
    }

    @field_validator("properties")
    @classmethod
    def _no_shadowing(cls, props: dict[str, Any]) -> dict[str, Any]:
        for key in props:
            if key in cls._TYPED:
                raise ValueError(f"set '{key}' with kafka.{cls._TYPED[key]}, not in properties")
        return props

    @model_validator(mode="after")
    def _resolve_secrets(self) -> KafkaSettings:
        self.sasl_password = _secret_from_file(
            self.sasl_password, self.sasl_password_file, "sasl_password", required=False
        )
        self.ssl_key_password = _secret_from_file(
            self.ssl_key_password, self.ssl_key_password_file, "ssl_key_password", required=False
        )
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
                self.sasl_username is None or self.sasl_password is None
            ):
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and "
                    "sasl_password (or sasl_password_file)"
                )
        return self

    @field_serializer("properties")
    def _mask(self, props: dict[str, Any]) -> dict[str, Any]:
        return mask_properties(props)

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by consumer, producer and admin client (real secrets)."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path is not None:
                conf[key] = str(path)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        for key, value in self.properties.items():
            conf[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return conf

    def masked_client_config(self) -> dict[str, str]:
        return {k: (_MASK if _SECRET_KEY.search(k) else v) for k, v in self.client_config().items()}


class DatabaseSettings(StrictModel):
    """The ERP database; syncd keeps its ledger in its own schema of the same database
    so the write-back and the ledger commit in one transaction."""

    dsn: SecretStr | None = Field(default=None, description="SQLAlchemy URL")
    dsn_file: Path | None = None
    pool_size: int = Field(default=5, ge=1, le=200)
    max_overflow: int = Field(default=5, ge=0, le=200)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    schema_name: str = Field(default="syncd", pattern=rf"^{_IDENT}$")

    @model_validator(mode="after")
    def _resolve(self) -> DatabaseSettings:
        self.dsn = _secret_from_file(self.dsn, self.dsn_file, "dsn", required=True)
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(self.dsn_value())
        except ArgumentError:
            raise ValueError(
                "dsn is not a SQLAlchemy URL (e.g. postgresql+psycopg://user@host:5432/erp)"
            ) from None
        return self

    def dsn_value(self) -> str:
        assert self.dsn is not None  # resolved by the validator
        return self.dsn.get_secret_value()

    def masked_dsn(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.dsn_value()).render_as_string(hide_password=True)


class IssuerSettings(StrictModel):
    """The e-invoice platform. Only the sandbox provider exists so far.

    The fields mirror `syncd.issuers.sandbox.SandboxIssuerSettings` (same names,
    same meaning) so `syncd.issuers.registry.create_issuer(provider, settings)`
    accepts this model; when real providers arrive this becomes a union of the
    providers' settings models discriminated by `provider`.
    """

    provider: Literal["sandbox"] = "sandbox"
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://einvoice.example.com")
    app_key: str = Field(min_length=1)
    app_secret: SecretStr | None = None
    app_secret_file: Path | None = None
    connect_timeout: float = Field(default=3.0, gt=0, description="seconds")
    read_timeout: float = Field(default=10.0, gt=0, description="seconds")
    write_timeout: float = Field(default=10.0, gt=0, description="seconds")
    pool_timeout: float = Field(default=5.0, gt=0, description="seconds")
    max_connections: int = Field(default=20, ge=1)
    max_keepalive_connections: int = Field(default=10, ge=0)

    def provider_settings(self) -> dict[str, Any]:
        """Settings for the provider's own model (secret resolved, file key dropped)."""
        return self.model_dump(exclude={"app_secret_file"})

    @model_validator(mode="after")
    def _resolve(self) -> IssuerSettings:
        self.app_secret = _secret_from_file(
            self.app_secret, self.app_secret_file, "app_secret", required=True
        )
        return self


class RetrySettings(StrictModel):
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of the delay, random +/-")

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_base_seconds")
        return self


class PipelineSettings(StrictModel):
    max_in_flight: int = Field(default=256, ge=1)
    max_in_flight_per_partition: int | None = Field(
        default=None, ge=1,
        description="documents of one partition in progress at once; a partition at its "
        "limit is paused so it cannot take every slot (unset: only max_in_flight applies)",
    )
    workers: int = Field(
        default=64, ge=1, le=512,
        description="threads calling the provider and writing results; each waits on one "
        "provider call at a time, so this bounds the documents per second at a given "
        "provider latency (the HTTP pool follows; the database pool up to 36)",
    )
    poll_interval_seconds: float = Field(
        default=0.2, gt=0,
        description="first status query of an accepted, still processing invoice",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    drain_deadline_seconds: float = Field(default=20.0, gt=0)
    migrate_on_start: bool = False


class LimitsSettings(StrictModel):
    """What one Kafka record or one document may ask of syncd. A record beyond a limit is
    dead-lettered with the limit's name; a document beyond `max_lines_per_document` is
    INVALID with that reason written back. The defaults are PostgreSQL's own bounds where
    it has them, so only a source that needs more has to raise them."""

    max_record_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="key or value bytes of one record"
    )
    max_nesting_depth: int = Field(
        default=32, ge=2, le=150, description="levels of nested structs/arrays in a record"
    )
    max_fields: int = Field(default=1600, ge=1, description="fields of one struct or object")
    max_decimal_digits: int = Field(
        default=1000, ge=1, description="significant digits of one decimal value"
    )
    min_decimal_scale: int = Field(default=-1000, description="lowest decimal scale")
    max_decimal_scale: int = Field(default=1000, description="highest decimal scale")
    max_lines_per_document: int = Field(
        default=2000, ge=1, description="line rows of one document (2000: the 数电 maximum)"
    )

    @model_validator(mode="after")
    def _scale_range(self) -> LimitsSettings:
        if self.min_decimal_scale > self.max_decimal_scale:
            raise ValueError("min_decimal_scale is above max_decimal_scale")
        return self


class MetricsSettings(StrictModel):
    host: str = "0.0.0.0"  # noqa: S104 -- scraped from other pods
    port: int = Field(default=9464, ge=1, le=65535)


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_format: bool = Field(default=True, alias="json")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ConnectorDatabase(StrictModel):
    """Where the connector reaches the ERP database, if not where syncd does."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None


_PLACEHOLDER = re.compile(r"^\$\{[^}]+\}$")


class ConnectorSettings(StrictModel):
    """Inputs of `syncd connectors render` (the Debezium Postgres connector)."""

    name: str | None = Field(default=None, description="default: <topic_prefix>-pg")
    slot_name: str | None = Field(default=None, description="default: syncd_<topic_prefix>")
    publication_name: str | None = Field(default=None, description="default: syncd_<topic_prefix>")
    heartbeat_interval_ms: int = Field(default=10000, ge=0)
    snapshot_mode: Literal["initial", "no_data", "never", "when_needed", "always"] = "initial"
    database: ConnectorDatabase = Field(default_factory=ConnectorDatabase)
    password: str = Field(
        default="${file:/opt/kafka/external-secrets/erp-db.properties:password}",
        description="a Kafka Connect config-provider placeholder, never the password itself",
    )
    extra: dict[str, str] = Field(default_factory=dict, description="more connector properties")

    @field_validator("password")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        if value and not _PLACEHOLDER.match(value):
            raise ValueError(
                "must be a config-provider placeholder like "
                "${file:/path/secrets.properties:password} (or empty for a trusted dev database); "
                "a password in the connector config would be readable through the Connect REST API"
            )
        return value

    @field_serializer("extra")
    def _mask(self, extra: dict[str, str]) -> dict[str, object]:
        return mask_properties(extra)


# --------------------------------------------------------------------------- documents

Scalar: TypeAlias = str | bool | int | float | Decimal | None
_TEMPLATE_REF = re.compile(r"\{(" + _IDENT + r")\}")


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
    snapshot: SnapshotPolicy = SnapshotPolicy.ISSUE_IF_UNINVOICED
    header: HeaderMapping
    seller: SellerIdentity | None = None
    lines: LinesConfig
    write_back: WriteBackConfig

    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        """The document type name (the key under `documents`).

        Read from pydantic's private-attribute dict directly: `self._name` goes through
        BaseModel.__getattr__ after a failed normal lookup, microseconds per call, and
        the intake asks for it several times per document.
        """
        private = self.__pydantic_private__
        return str(private["_name"]) if private is not None else self._name

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

    def source_columns(self) -> set[str]:
        """Every source-table column the config reads."""
        cols = set(self.key_columns) | self.qualifies.columns()
        if self.reverses is not None:
            cols |= self.reverses.columns()
        for src in self.header.sources().values():
            cols |= src.columns()
        if self.lines.references:
            cols.add(self.lines.references)
        return cols

    @model_validator(mode="after")
    def _consistent(self) -> DocumentConfig:
        if self.lines.references is None:
            if len(self.key_columns) != 1:
                raise ValueError("lines.references is required when the key has several columns")
            self.lines.references = self.key_columns[0]
        if self.lines.table == self.table:
            raise ValueError("lines.table must differ from the document table")
        keys = self.write_back.key_columns
        if keys is not None and self.write_back_table == self.table and keys != self.key_columns:
            raise ValueError("write_back.key_columns must equal key_columns on the source table")
        if self.snapshot is SnapshotPolicy.ISSUE_IF_UNINVOICED and not self.writes_back_to_source:
            raise ValueError(
                "snapshot: issue_if_uninvoiced needs the invoice number in the source row "
                "(write_back.table = table) to tell invoiced rows apart; use snapshot: ignore"
            )
        return self


# --------------------------------------------------------------------------- root


class SyncdConfig(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        populate_by_name=True,
    )

    kafka: KafkaSettings
    database: DatabaseSettings
    issuer: IssuerSettings
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    seller: SellerIdentity | None = Field(
        default=None, description="default seller of every document type"
    )
    documents: dict[str, DocumentConfig] = Field(min_length=1)
    decimal_scales: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="schema.table -> column -> scale, for precise decimals sent without schemas",
    )
    secrets_dir: Path | None = Field(
        default=None, description="directory of secret files named like key paths (database__dsn)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier wins: environment over secret files over the YAML file (init kwargs).
        secrets = NestedSecretsSettingsSource(
            file_secret_settings, secrets_prefix="", secrets_dir_missing="error"
        )
        return (env_settings, secrets, init_settings)

    @field_validator("documents")
    @classmethod
    def _names(cls, docs: dict[str, DocumentConfig]) -> dict[str, DocumentConfig]:
        for name, doc in docs.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
                raise ValueError(f"document type name '{name}' must match [a-z][a-z0-9_]*")
            doc._name = name
        return docs

    @field_validator("decimal_scales")
    @classmethod
    def _scales(cls, scales: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for table, cols in scales.items():
            if not _QUALIFIED_TABLE.match(table):
                raise ValueError(f"'{table}' is not schema.table")
            for col, scale in cols.items():
                if not 0 <= scale <= 38:
                    raise ValueError(f"{table}.{col}: scale {scale} is outside 0..38")
        return scales

    @model_validator(mode="after")
    def _resolve(self) -> SyncdConfig:
        prefix = self.kafka.topic_prefix
        seen: dict[str, str] = {}
        for name, doc in self.documents.items():
            if doc.table in seen:
                raise ValueError(
                    f"documents {seen[doc.table]} and {name} both use table {doc.table}; "
                    "one table feeds one document type"
                )
            seen[doc.table] = name
            if doc.topic is None:
                doc.topic = f"{prefix}.{doc.table}"
            if doc.seller is None:
                if self.seller is None:
                    raise ValueError(
                        f"documents.{name}: no seller (set seller: at the top or in the document)"
                    )
                doc.seller = self.seller
        slug = re.sub(r"[^a-z0-9_]", "_", prefix.lower())
        if self.connector.name is None:
            self.connector.name = f"{prefix}-pg"
        if self.connector.slot_name is None:
            self.connector.slot_name = f"syncd_{slug}"
        if self.connector.publication_name is None:
            self.connector.publication_name = f"syncd_{slug}"
        return self

    # Convenience accessors used by the pipeline and commands.

    def route(self, table: str) -> DocumentConfig | None:
        """The document type fed by `schema.table` (as the decoder spells it), if any."""
        for doc in self.documents.values():
            if doc.table == table:
                return doc
        return None

    def line_tables(self) -> dict[str, DocumentConfig]:
        return {doc.lines.table: doc for doc in self.documents.values()}

    def topics(self) -> list[str]:
        """Topics syncd subscribes to: the document tables' topics."""
        return [doc.topic for doc in self.documents.values() if doc.topic is not None]

    def captured_tables(self) -> list[str]:
        """Tables the connector must capture: documents and their line tables."""
        out: list[str] = []
        for doc in self.documents.values():
            for t in (doc.table, doc.lines.table):
                if t not in out:
                    out.append(t)
        return out

    def decimal_scales_for(self, table: str) -> Mapping[str, int]:
        return self.decimal_scales.get(table, {})

    def masked_dump(self) -> dict[str, Any]:
        """The resolved config for printing: secrets masked, defaults filled in."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"secrets_dir"})
        data["database"]["dsn"] = self.database.masked_dsn()
        if self.secrets_dir is not None:
            data["secrets_dir"] = str(self.secrets_dir)
        return data


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One located problem: `file:line: path: message`."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None
    origin: str | None = None  # e.g. "environment SYNCD_KAFKA__GROUP_ID"

    def __str__(self) -> str:
        if self.origin is not None:
            where = self.origin
        elif self.file is not None:
            where = f"{self.file}:{self.line}" if self.line is not None else self.file
        else:
            where = "<config>"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem of a config at once, so one edit-check round fixes them all."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


Loc: TypeAlias = tuple[str | int, ...]


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, file: str) -> tuple[Any, dict[Loc, int], list[ConfigProblem]]:
    """Parse once into nodes (for line numbers) and build the data from them."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    index, problems = _yaml_lines(root, file)
    return data, index, problems


def _yaml_lines(
    root: yaml.Node | None, file: str
) -> tuple[dict[Loc, int], list[ConfigProblem]]:
    """Map every YAML key path to its (1-based) line; also find duplicate keys,
    which PyYAML would otherwise silently resolve to the last one."""
    index: dict[Loc, int] = {}
    problems: list[ConfigProblem] = []

    def walk(node: yaml.Node, path: Loc) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    problems.append(
                        ConfigProblem(_dotted(child), "duplicate key (the earlier one would be "
                                      "silently ignored)", file, key_node.start_mark.line + 1)
                    )
                seen.add(key)
                index[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return index, problems


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated so the walker sees the model, dict or list inside."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if _is_container(a)]
            if not models:
                return tp
            tp = models[0]
        else:
            return tp


def _is_container(tp: Any) -> bool:
    origin = get_origin(tp)
    return (isinstance(tp, type) and issubclass(tp, BaseModel)) or origin in (dict, list) or (
        origin is Annotated
    )


def _keys_at(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The keys allowed at `loc` (for "did you mean"), walking the model's types."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next(
                (f for n, f in tp.model_fields.items() if part in (n, f.alias)), None
            )
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return None


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" -- did you mean '{close[0]}'?" if close else ""


def _is_secret_path(loc: Loc) -> bool:
    return any(isinstance(p, str) and (_SECRET_KEY.search(p) or p == "dsn") for p in loc)


def _message(err: Any, loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _keys_at(SyncdConfig, loc[:-1]) or []
        hint = _suggest(key, allowed)
        if not hint and allowed:
            hint = f" (allowed: {', '.join(allowed)})"
        return f"unknown key '{key}'{hint}"
    if kind == "missing":
        return f"missing required key '{loc[-1]}'" if loc else "missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in ("literal_error", "enum"):
        expected = str(err.get("ctx", {}).get("expected", ""))
        options = re.findall(r"'([^']*)'", expected)
        value = err.get("input")
        if isinstance(value, str):
            msg = f"'{value}' is not one of {', '.join(options)}{_suggest(value, options)}"
    elif "input" in err and not _is_secret_path(loc) and kind not in ("model_type", "dict_type"):
        value = err["input"]
        if isinstance(value, str | int | float | bool) or value is None:
            msg += f" (got {value!r})"
    return msg


def _origin(loc: Loc, env_paths: Mapping[Loc, str], secret_paths: Mapping[Loc, str]) -> str | None:
    for paths, label in ((env_paths, "environment"), (secret_paths, "secret file")):
        for path, name in paths.items():
            if loc[: len(path)] == path:
                return f"{label} {name}"
    return None


def _override_paths(names: Iterable[str], prefix: str) -> dict[Loc, str]:
    out: dict[Loc, str] = {}
    for name in names:
        if not name.upper().startswith(prefix):
            continue
        parts = name[len(prefix):].lower().split(ENV_DELIMITER)
        if all(parts):
            out[tuple(parts)] = name
    return out


def _locate(loc: Loc, index: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in index:
            return index[loc[:n]]
    return None


def load_config(path: str | Path) -> SyncdConfig:
    """Load, override from env and secret files, validate; raise one ConfigError."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read config: {exc.strerror}", file)
        raise ConfigError([problem]) from None
    return parse_config(text, file)


def parse_config(text: str, file: str = "<config>") -> SyncdConfig:
    try:
        data, index, problems = _parse_yaml(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigProblem("", f"YAML syntax: {exc.problem or exc}", file, line)]
        ) from None
    if problems:
        raise ConfigError(problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("", "the config must be a YAML mapping", file, 1)])

    secrets_dir = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR") or data.get("secrets_dir")
    secret_names: list[str] = []
    if secrets_dir is not None:
        sdir = Path(str(secrets_dir))
        if not sdir.is_dir():
            line = index.get(("secrets_dir",))
            problem = ConfigProblem("secrets_dir", f"{sdir} is not a directory", file, line)
            raise ConfigError([problem])
        secret_names = [p.name for p in sdir.iterdir() if not p.name.startswith(".")]
    env_paths = _override_paths(os.environ, ENV_PREFIX)
    secret_paths = _override_paths((ENV_PREFIX + n.upper() for n in secret_names), ENV_PREFIX)
    secret_paths = {k: v[len(ENV_PREFIX):].lower() for k, v in secret_paths.items()}

    try:
        kwargs: dict[str, Any] = dict(data)
        if secrets_dir is not None:
            kwargs["_secrets_dir"] = str(secrets_dir)
        return SyncdConfig(**kwargs)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            found.append(
                ConfigProblem(
                    _dotted(loc),
                    _message(err, loc),
                    file,
                    _locate(loc, index),
                    _origin(loc, env_paths, secret_paths),
                )
            )
        raise ConfigError(found) from None
    except SettingsError as exc:
        problem = ConfigProblem("", f"environment/secret override: {exc}", file)
        raise ConfigError([problem]) from None
