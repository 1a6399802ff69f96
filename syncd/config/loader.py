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
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Annotated,
    Any,
    TypeAlias,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError
from pydantic_settings.sources import NestedSecretsSettingsSource

from syncd.config.accounts import (
    ACCOUNT_NAME,
    DEFAULT_ACCOUNT,
    AccountSettings,
    resolve_accounts,
)
from syncd.config.base import (
    _QUALIFIED_TABLE,
    _SECRET_KEY,
    ENV_DELIMITER,
    ENV_PREFIX,
)
from syncd.config.documents import (
    DocumentConfig,
    SellerIdentity,
)
from syncd.config.redforms import RedFormsSettings
from syncd.config.secrets import normalise, redact, scrub
from syncd.config.settings import (
    AuditSettings,
    ConnectorSettings,
    DatabaseSettings,
    FilesSettings,
    IssuerSettings,
    KafkaSettings,
    LedgerSettings,
    LimitsSettings,
    LoggingSettings,
    MetricsSettings,
    PipelineSettings,
)
from syncd.errors import SyncdError


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
    issuer: IssuerSettings | None = Field(
        default=None, description="the one platform account (named `default`)"
    )
    issuers: dict[str, AccountSettings] = Field(
        default_factory=dict,
        description="named platform accounts, one per legal entity (instead of issuer:)",
    )
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    red_forms: RedFormsSettings = Field(
        default_factory=RedFormsSettings, description="red-letter forms raised by buyers"
    )
    files: FilesSettings = Field(default_factory=FilesSettings)
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

    @field_validator("issuers")
    @classmethod
    def _account_names(cls, accounts: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        for name in accounts:
            if not re.fullmatch(ACCOUNT_NAME, name):
                raise ValueError(f"account name '{name}' must match {ACCOUNT_NAME}")
        return accounts

    @model_validator(mode="after")
    def _resolve(self) -> SyncdConfig:
        resolve_accounts(self.issuer, self.issuers, self.documents, self.seller)
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
            if doc.returns is not None:
                if doc.returns.table in seen:
                    raise ValueError(
                        f"documents.{name}.returns: table {doc.returns.table} is already "
                        f"used by {seen[doc.returns.table]}"
                    )
                seen[doc.returns.table] = f"{name}.returns"
                if doc.returns.topic is None:
                    doc.returns.topic = f"{prefix}.{doc.returns.table}"
            if doc.seller is None and doc.account is None:
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

    def accounts(self) -> dict[str, IssuerSettings]:
        """Every platform account by name: `issuers:`, or `issuer:` as `default`."""
        if self.issuer is not None:
            return {DEFAULT_ACCOUNT: self.issuer}
        return dict(self.issuers)

    @property
    def primary_issuer(self) -> IssuerSettings:
        """The first account (the only one of a single-account config)."""
        return next(iter(self.accounts().values()))

    def route(self, table: str) -> DocumentConfig | None:
        """The document type fed by `schema.table` (as the decoder spells it), if any."""
        for doc in self.documents.values():
            if doc.table == table:
                return doc
        return None

    def line_tables(self) -> dict[str, DocumentConfig]:
        return {doc.lines.table: doc for doc in self.documents.values()}

    def topics(self) -> list[str]:
        """Topics syncd subscribes to: the document tables' topics (and return tables')."""
        out = [doc.topic for doc in self.documents.values() if doc.topic is not None]
        out += [
            doc.returns.topic
            for doc in self.documents.values()
            if doc.returns is not None and doc.returns.topic is not None
        ]
        return out

    def return_tables(self) -> dict[str, DocumentConfig]:
        """Return table -> the document type whose invoices its rows return against."""
        return {d.returns.table: d for d in self.documents.values() if d.returns is not None}

    def captured_tables(self) -> list[str]:
        """Tables the connector must capture: documents and their line tables."""
        out: list[str] = []
        for doc in self.documents.values():
            tables = [doc.table, doc.lines.table]
            if doc.returns is not None:
                tables.append(doc.returns.table)
            for t in tables:
                if t not in out:
                    out.append(t)
        return out

    def decimal_scales_for(self, table: str) -> Mapping[str, int]:
        return self.decimal_scales.get(table, {})

    def secret_values(self) -> tuple[str, ...]:
        """THE registry: every secret value of the config, longest first (issuer secret and
        URL userinfo, database password and secret DSN parameters, SASL and key passwords,
        secret Kafka properties). Log redaction and every printer use it."""
        return normalise(
            [
                *(s for account in self.accounts().values() for s in account.secret_values()),
                *self.database.secret_values(),
                *self.kafka.secret_values(),
                *self.audit.secret_values(),
            ]
        )

    def redact(self, text: str) -> str:
        """`text` (an error quoting a DSN, a broker message) with every secret scrubbed."""
        return redact(text, self.secret_values())

    def masked_dump(self) -> dict[str, Any]:
        """The resolved config for printing: secrets masked, defaults filled in."""
        data = self.model_dump(mode="json", by_alias=True, exclude={"secrets_dir"})
        data["database"]["dsn"] = self.database.masked_dsn()
        if self.secrets_dir is not None:
            data["secrets_dir"] = str(self.secrets_dir)
        # By value as well as by key: no registered secret survives anywhere in the dump.
        dumped: dict[str, Any] = scrub(data, self.secret_values())
        return dumped


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


class ConfigError(SyncdError):
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


def _yaml_lines(root: yaml.Node | None, file: str) -> tuple[dict[Loc, int], list[ConfigProblem]]:
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
                        ConfigProblem(
                            _dotted(child),
                            "duplicate key (the earlier one would be silently ignored)",
                            file,
                            key_node.start_mark.line + 1,
                        )
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
    return (
        (isinstance(tp, type) and issubclass(tp, BaseModel))
        or origin in (dict, list)
        or (origin is Annotated)
    )


def _keys_at(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The keys allowed at `loc` (for "did you mean"), walking the model's types."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
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


#: Keys whose values are never echoed in an error: they may carry credentials without a
#: secret-looking name (a URL's userinfo, a PEM or an OAuth config in a passthrough map).
_UNECHOED_KEYS = frozenset({"dsn", "base_url", "proxy", "properties", "extra"})


def _is_secret_path(loc: Loc) -> bool:
    return any(isinstance(p, str) and (_SECRET_KEY.search(p) or p in _UNECHOED_KEYS) for p in loc)


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
        msg = msg[len("Value error, ") :]
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
        parts = name[len(prefix) :].lower().split(ENV_DELIMITER)
        if all(parts):
            out[tuple(parts)] = name
    return out


_LEADING_PATH = re.compile(r"([a-z_][a-z0-9_]*(?:\.[^\s.:]+)*): (.+)", re.DOTALL)


def _leading_path(message: str, index: Mapping[Loc, int]) -> tuple[Loc, str]:
    """`documents.x.account: unknown ...` -> the key path (when the file has it) and the
    rest, so a problem found across sections still points at its line."""
    match = _LEADING_PATH.fullmatch(message)
    if match is None:
        return (), message
    loc: Loc = tuple(match.group(1).split("."))
    if loc[:1] not in index:
        return (), message
    return loc, match.group(2)


def _locate(loc: Loc, index: Mapping[Loc, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in index:
            return index[loc[:n]]
    return None


def key_lines(path: str | Path) -> dict[str, int]:
    """Every key path of the YAML file at `path`, dotted as in the problems
    (`documents.sales_order.header.buyer_name`), with its 1-based line; empty when the
    file cannot be read or parsed (its problems are `load_config`'s to report)."""
    try:
        _data, index, _problems = _parse_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, yaml.YAMLError):
        return {}
    return {_dotted(loc): line for loc, line in index.items() if loc}


def line_of(dotted: str, lines: Mapping[str, int]) -> int | None:
    """The line of the longest key path that `dotted` starts with (a problem about
    `documents.x.header.y.column` is on the line of `documents.x.header.y`)."""
    found = [
        (len(key), line)
        for key, line in lines.items()
        if dotted == key or (dotted.startswith(key) and dotted[len(key)] in ".[")
    ]
    return max(found)[1] if found else None


def load_config(path: str | Path) -> SyncdConfig:
    """Load, override from env and secret files, validate; raise one ConfigError."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("", f"cannot read config: {exc.strerror}", file)
        raise ConfigError([problem]) from None
    return parse_config(text, file)


class DatabaseOnly(BaseSettings):
    """The `database` section alone, read exactly as `SyncdConfig` reads it (YAML,
    `SYNCD_DATABASE__*` variables, `secrets_dir` files like `database__dsn`), the other
    sections ignored: what `syncd migrate` needs, so it resolves the DSN the same way
    `check-config` and the daemon do."""

    model_config = SettingsConfigDict(
        extra="ignore",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        populate_by_name=True,
    )

    database: DatabaseSettings
    secrets_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return SyncdConfig.settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )


def load_database(path: str | Path | None) -> DatabaseSettings:
    """The database settings of the config at `path` (or of the environment and
    `SYNCD_SECRETS_DIR` alone, for None); one `ConfigError` listing the problems."""
    if path is None:
        return _parse("{}", "<environment>", DatabaseOnly).database
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("", f"cannot read config: {exc.strerror}", file)]
        ) from None
    return _parse(text, file, DatabaseOnly).database


def parse_config(text: str, file: str = "<config>") -> SyncdConfig:
    return _parse(text, file, SyncdConfig)


_Model = TypeVar("_Model", SyncdConfig, DatabaseOnly)


def _parse(text: str, file: str, model: type[_Model]) -> _Model:
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
    secret_paths = {k: v[len(ENV_PREFIX) :].lower() for k, v in secret_paths.items()}

    try:
        kwargs: dict[str, Any] = dict(data)
        if secrets_dir is not None:
            kwargs["_secrets_dir"] = str(secrets_dir)
        return model(**kwargs)
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = _message(err, loc)
            if not loc:  # a check across sections names its key path first
                loc, message = _leading_path(message, index)
            found.append(
                ConfigProblem(
                    _dotted(loc),
                    message,
                    file,
                    _locate(loc, index),
                    _origin(loc, env_paths, secret_paths),
                )
            )
        raise ConfigError(found) from None
    except SettingsError as exc:
        problem = ConfigProblem("", f"environment/secret override: {exc}", file)
        raise ConfigError([problem]) from None


__all__ = [
    "ConfigError",
    "ConfigProblem",
    "Loc",
    "SyncdConfig",
    "key_lines",
    "line_of",
    "load_config",
    "load_database",
    "parse_config",
]
