"""The daemon's settings: Kafka, database, issuer, pipeline, limits, metrics, logging, connector."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Final,
    Literal,
)
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from syncd.config.base import (
    _IDENT,
    _MASK,
    _SECRET_KEY,
    StrictModel,
    _secret_from_file,
    is_placeholder,
    is_secret_property,
    mask_properties,
    property_secrets,
)

#: librdkafka properties that switch off what TLS is for: (property, value that disables).
_INSECURE_KAFKA: dict[str, tuple[str, ...]] = {
    "enable.ssl.certificate.verification": ("false", "0"),
    "ssl.endpoint.identification.algorithm": ("none", ""),
}


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
    allow_insecure: bool = Field(
        default=False,
        description="allow properties that switch off TLS verification (never in production)",
    )
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

    @field_validator("properties")
    @classmethod
    def _verification_on(cls, props: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.data.get("allow_insecure"):
            return props
        for key, off in _INSECURE_KAFKA.items():
            if key in props and str(props[key]).strip().lower() in off:
                raise ValueError(
                    f"'{key}: {props[key]}' switches off TLS verification of the brokers "
                    "(anyone on the path can read and forge records); remove it, or set "
                    "kafka.allow_insecure: true for a throwaway test cluster"
                )
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
        return {
            k: (_MASK if is_secret_property(k, v) else v) for k, v in self.client_config().items()
        }

    def secret_values(self) -> list[str]:
        """Every secret string of the Kafka settings (typed keys and passthrough values)."""
        out = [s.get_secret_value() for s in (self.sasl_password, self.ssl_key_password) if s]
        for key, value in self.properties.items():
            out += property_secrets(key, value)
        return out


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
        """The DSN for printing: the password and secret query parameters
        (`password`, `sslpassword`, ...) shown as `***`."""
        from sqlalchemy.engine import make_url

        url = make_url(self.dsn_value())
        sentinel = "SYNCDMASKEDVALUE"
        query = {k: (sentinel if _secret_query_key(k) else v) for k, v in url.query.items()}
        text = url.set(query=query).render_as_string(hide_password=True)
        return text.replace(sentinel, "***")

    def secret_values(self) -> list[str]:
        """The DSN's password and every secret query parameter."""
        from sqlalchemy.engine import make_url

        url = make_url(self.dsn_value())
        out = [url.password] if url.password else []
        for key, value in url.query.items():
            if _secret_query_key(key):
                out += [value] if isinstance(value, str) else list(value)
        return [str(v) for v in out]


def _secret_query_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) or key.lower() in ("sslpassword", "password")


#: Settings only the Nuonuo provider reads (dropped for the sandbox).
NUONUO_FIELDS: Final = (
    "seller_tax_id",
    "token_url",
    "token_refresh_margin",
    "token_refusal_hold",
    "account_probe_interval",
)


class IssuerSettings(StrictModel):
    """The e-invoice platform: `sandbox` (syncd's stand-in) or `nuonuo` (docs/issuers.md).

    The fields mirror the providers' own settings models (`SandboxIssuerSettings`,
    `NuonuoIssuerSettings`: same names, same meaning) so
    `syncd.issuers.registry.create_issuer(provider, provider_settings())` accepts them;
    the Nuonuo-only fields are refused for the sandbox and required where Nuonuo needs them.
    """

    provider: Literal["sandbox", "nuonuo"] = "sandbox"
    seller_tax_id: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Z]{15,20}$",
        description="nuonuo: the seller's taxpayer ID this app issues for (the userTax header)",
    )
    token_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="nuonuo: the token endpoint (default https://open.nuonuo.com/accessToken)",
    )
    token_refresh_margin: float = Field(
        default=3600.0, ge=0, description="nuonuo: refresh the shared token this early (s)"
    )
    account_probe_interval: float = Field(
        default=60.0,
        ge=0,
        description="nuonuo: after an account-level refusal (bureau session, credit, "
        "credentials) submissions pause; one probe is sent this often (s)",
    )
    token_refusal_hold: float = Field(
        default=900.0,
        ge=0,
        description="nuonuo: after the app's credentials were refused, ask again only this "
        "much later (s): the platform allows 50 token fetches a month",
    )
    query_horizon_seconds: float | None = Field(
        default=None,
        gt=0,
        description="how long the platform answers queries by serial (s); past it, a "
        "document it answers 'not found' for is searched in its invoice list and adopted "
        "on an exact unique match, else parked for a person -- never re-sent "
        "(null: the platform never forgets)",
    )
    # Before base_url: its validator reads this.
    allow_insecure_http: bool = Field(
        default=False, description="allow plain http:// to a host other than loopback"
    )
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
    ca_file: Path | None = Field(
        default=None, description="PEM bundle of the CA(s) trusted for the platform (private CA)"
    )
    client_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS (may hold the key too)"
    )
    client_key_file: Path | None = Field(default=None, description="PEM key of client_cert_file")
    max_response_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="a longer response body is refused"
    )
    proxy: str | None = Field(
        default=None,
        description="http://[user:password@]host:port of an HTTP proxy (CONNECT) to reach the "
        "platform through; wins over HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY "
        "(unset: those decide)",
    )

    def provider_settings(self) -> dict[str, Any]:
        """Settings for the provider's own model (secret resolved, file key dropped; the
        real values, not the printable dump: `base_url` keeps its userinfo)."""
        skip = {"app_secret_file"}
        if self.provider == "sandbox":
            skip.update(NUONUO_FIELDS)
        settings = {
            name: getattr(self, name) for name in type(self).model_fields if name not in skip
        }
        if self.provider == "nuonuo" and settings["token_url"] is None:
            del settings["token_url"]  # the provider's own default
        return settings

    @field_validator("base_url")
    @classmethod
    def _transport(cls, value: str, info: ValidationInfo) -> str:
        return check_issuer_url(
            value, allow_insecure_http=bool(info.data.get("allow_insecure_http"))
        )

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return check_proxy_url(value) if value is not None else None

    @field_serializer("base_url")
    def _mask_url(self, value: str) -> str:
        return mask_url_userinfo(value)

    @field_serializer("proxy")
    def _mask_proxy(self, value: str | None) -> str | None:
        return mask_url_userinfo(value) if value is not None else None

    @model_validator(mode="after")
    def _resolve(self) -> IssuerSettings:
        self.app_secret = _secret_from_file(
            self.app_secret, self.app_secret_file, "app_secret", required=True
        )
        check_issuer_tls(self.base_url, self.ca_file, self.client_cert_file, self.client_key_file)
        if self.provider == "nuonuo" and self.seller_tax_id is None:
            raise ValueError("issuer.provider nuonuo needs issuer.seller_tax_id (the userTax)")
        if self.provider == "sandbox":
            given = sorted(set(NUONUO_FIELDS) & self.model_fields_set)
            if given:
                raise ValueError(f"{', '.join(given)}: only for issuer.provider nuonuo")
        if self.token_url is not None:
            check_issuer_url(self.token_url, allow_insecure_http=self.allow_insecure_http)
        return self

    def secret_values(self) -> list[str]:
        """The application secret and the credentials in the userinfo of the base URL, of
        `proxy` and of the proxy environment variables (which the issuer may use)."""
        out = [self.app_secret.get_secret_value()] if self.app_secret is not None else []
        out += url_userinfo_secrets(self.base_url)
        if self.proxy is not None:
            out += url_userinfo_secrets(self.proxy)
        return out + environment_proxy_secrets(os.environ)


def is_loopback_host(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer_url(value: str, *, allow_insecure_http: bool) -> str:
    """Refuse plain http:// to a non-loopback host unless explicitly allowed. The message
    never quotes the URL (it may carry credentials in its userinfo)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s)://host URL")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"plain http:// to {parts.hostname} sends invoices and signatures unencrypted; "
            "use https://, or set issuer.allow_insecure_http: true for a test platform"
        )
    return value


def check_issuer_tls(
    base_url: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> None:
    """The TLS files exist and make sense together (read at start, not at the first call)."""
    given = [
        (n, f)
        for n, f in (
            ("ca_file", ca_file),
            ("client_cert_file", cert_file),
            ("client_key_file", key_file),
        )
        if f is not None
    ]
    if given and urlsplit(base_url).scheme != "https":
        raise ValueError(f"{given[0][0]} needs an https:// base_url")
    if key_file is not None and cert_file is None:
        raise ValueError("client_key_file needs client_cert_file")
    for name, path in given:
        if not path.is_file():
            raise ValueError(f"{name}: {path} is not a readable file")


def url_userinfo_secrets(url: str) -> list[str]:
    """The password of `scheme://user:password@host` (or a lone token in the user part)."""
    parts = urlsplit(url)
    if parts.password:
        return [parts.password, unquote(parts.password)]
    if parts.username and "@" in parts.netloc:
        return [parts.username, unquote(parts.username)]
    return []


#: The environment variables naming a proxy (either spelling is honoured; lower case wins).
PROXY_ENVIRONMENT: Final = tuple(
    spelling
    for name in ("https_proxy", "http_proxy", "all_proxy")
    for spelling in (name, name.upper())
)


def check_proxy_url(value: str) -> str:
    """An `http://[user:password@]host[:port]` proxy URL (CONNECT is spoken to it in
    plain HTTP). The message quotes the URL with its userinfo masked."""
    value = value.strip()
    parts = urlsplit(value)
    shown = mask_url_userinfo(value)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"proxy {shown}: need http://[user:password@]host:port")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"proxy {shown}: the port is not a number up to 65535") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy {shown}: a proxy URL has no path, query or fragment")
    return value


def environment_proxy_secrets(env: Mapping[str, str]) -> list[str]:
    """The credentials in the userinfo of every proxy variable of `env`."""
    return [s for name in PROXY_ENVIRONMENT for s in url_userinfo_secrets(env.get(name) or "")]


def mask_url_userinfo(url: str) -> str:
    """`https://user:pw@host/x` -> `https://***@host/x` (the whole userinfo)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


class RetrySettings(StrictModel):
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of the delay, random +/-")
    blocked_recheck_seconds: float = Field(
        default=300.0,
        gt=0,
        description="a document blocked by an account-level refusal is tried again this "
        "much later (a paused Nuonuo account answers it without a request until its probe "
        "succeeds)",
    )

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_base_seconds")
        return self


class PipelineSettings(StrictModel):
    max_in_flight: int = Field(default=256, ge=1)
    max_in_flight_per_partition: int | None = Field(
        default=None,
        ge=1,
        description="documents of one partition in progress at once; a partition at its "
        "limit is paused so it cannot take every slot (unset: only max_in_flight applies)",
    )
    workers: int = Field(
        default=64,
        ge=1,
        le=512,
        description="threads reading documents and, with `provider_calls: threads` (or a "
        "provider without an event-loop client), calling the provider: each then waits on "
        "one call at a time, bounding the documents per second at a given provider latency "
        "(the HTTP pool follows; the database pool up to 36)",
    )
    provider_calls: Literal["event_loop", "threads"] = Field(
        default="event_loop",
        description="where provider calls wait: on one event loop (thousands of documents "
        "may wait on a slow platform at once; the in-flight limit bounds them) or on the "
        "worker threads (each waits on one call, so `workers` bounds documents per second "
        "at a given latency). Providers without an event-loop client use the threads",
    )
    poll_interval_seconds: float = Field(
        default=0.2,
        gt=0,
        description="first status query of an accepted, still processing invoice",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    drain_deadline_seconds: float = Field(default=20.0, gt=0)
    migrate_on_start: bool = False
    stuck_after_seconds: float = Field(
        default=900.0,
        gt=0,
        description="a non-terminal document whose last transition is older than this is "
        "stuck (the syncd_ledger_stuck_documents gauge and its alert); keep it above "
        "retry.backoff_max_seconds, or a document waiting out one long backoff counts as stuck",
    )


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


class LedgerSettings(StrictModel):
    """syncd's own records in the ERP database."""

    payload_retention_days: float | None = Field(
        default=None,
        ge=0,
        description="days after which a settled document's stored payload (buyer tax ID, "
        "address, phone, e-mail, lines) is deleted; its hash, ledger row and audit trail "
        "stay (unset: keep payloads)",
    )
    prune_batch_size: int = Field(
        default=200, ge=1, le=10000, description="payloads pruned per transaction"
    )
    prune_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often the daemon looks for payloads to prune"
    )


class MetricsSettings(StrictModel):
    host: str = "0.0.0.0"  # noqa: S104 -- scraped from other pods
    port: int = Field(default=9464, ge=1, le=65535)


class AuditSettings(StrictModel):
    """The audit trail: how long rows are kept, and the key that signs pruning checkpoints."""

    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="`syncd audit prune` removes rows older than this (unset: keep all)",
    )
    checkpoint_key_file: Path | None = Field(
        default=None,
        description="file holding the HMAC key that signs (and verifies) pruning checkpoints",
    )
    checkpoint_key: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _resolve(self) -> AuditSettings:
        self.checkpoint_key = _secret_from_file(
            self.checkpoint_key, self.checkpoint_key_file, "checkpoint_key", required=False
        )
        if self.checkpoint_key is not None and len(self.checkpoint_key.get_secret_value()) < 16:
            raise ValueError("checkpoint_key must be at least 16 characters")
        return self

    def key_bytes(self) -> bytes | None:
        """The HMAC key, or None when checkpoints are not signed."""
        if self.checkpoint_key is None:
            return None
        return self.checkpoint_key.get_secret_value().encode()

    def secret_values(self) -> list[str]:
        return [self.checkpoint_key.get_secret_value()] if self.checkpoint_key else []


class FilesSettings(StrictModel):
    """The archive of issued invoices' files (PDF, OFD, XML): where, which, how long.

    Off unless `archive` is set. Chinese rules keep accounting records (invoices among
    them) for 30 years, hence the default retention.
    """

    archive: Literal["directory", "database"] | None = Field(
        default=None,
        description="where fetched files are kept: a directory (a mounted volume) or the "
        "ledger's database (unset: files are not archived)",
    )
    directory: Path | None = Field(
        default=None, description="root of the archive when `archive: directory`"
    )
    formats: tuple[Literal["pdf", "ofd", "xml"], ...] = Field(
        default=("pdf", "ofd", "xml"),
        min_length=1,
        description="the files fetched per invoice (a format the platform does not offer is "
        "recorded UNAVAILABLE)",
    )
    retention_years: int = Field(
        default=30,
        ge=1,
        le=100,
        description="years an archived file is kept (recorded as its keep_until)",
    )
    max_attempts: int = Field(
        default=8, ge=1, le=1000, description="downloads tried per file before it is FAILED"
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="how often the worker looks for work"
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="one download's time limit"
    )
    max_bytes: int = Field(
        default=50 * 2**20, ge=1024, description="a larger file is refused (FAILED)"
    )

    @model_validator(mode="after")
    def _directory_given(self) -> FilesSettings:
        if self.archive == "directory" and self.directory is None:
            raise ValueError("archive: directory needs files.directory")
        return self


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_format: bool = Field(default=True, alias="json")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


#: libpq's sslmode values, which Debezium's `database.sslmode` takes too.
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class ConnectorDatabase(StrictModel):
    """Where and how the connector reaches the ERP database, if not as syncd does.

    The TLS settings default to the DSN's query parameters (`sslmode`, `sslrootcert`,
    `sslcert`, `sslkey`); give them here when the files sit at other paths on the
    Kafka Connect workers than in syncd's pods. The key's password is never taken from
    the DSN: `sslpassword` takes a config-provider reference only."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None
    sslmode: SslMode | None = Field(default=None, description="default: the DSN's sslmode")
    sslrootcert: str | None = Field(
        default=None, description="CA file on the Connect workers (default: the DSN's)"
    )
    sslcert: str | None = Field(
        default=None, description="client certificate on the Connect workers (default: the DSN's)"
    )
    sslkey: str | None = Field(
        default=None,
        description="client key on the Connect workers, PKCS-8 DER or PKCS-12 for the JDBC "
        "driver (default: the DSN's)",
    )
    sslpassword: str | None = Field(
        default=None, description="the client key's password: a config-provider reference"
    )

    @field_validator("sslpassword")
    @classmethod
    def _reference_only(cls, value: str | None) -> str | None:
        if value is not None and not is_placeholder(value):
            raise ValueError(
                "must be a config-provider reference such as "
                "${file:/opt/kafka/external-secrets/erp-db.properties:sslpassword}; a literal "
                "password in the connector config is readable through the Connect REST API"
            )
        return value


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
        if value and not is_placeholder(value):
            raise ValueError(
                "must be a config-provider placeholder like "
                "${file:/path/secrets.properties:password} (or empty for a trusted dev database); "
                "a password in the connector config would be readable through the Connect REST API"
            )
        return value

    @field_validator("extra")
    @classmethod
    def _no_literal_secrets(cls, extra: dict[str, str]) -> dict[str, str]:
        literal = sorted(k for k, v in extra.items() if is_secret_property(k, v))
        if literal:
            raise ValueError(
                f"{', '.join(literal)}: a literal secret in the connector config is readable "
                "by anyone with the Connect REST API; give a config-provider reference such "
                "as ${file:/opt/kafka/external-secrets/erp-db.properties:password} or "
                "${env:ERP_DB_PASSWORD}"
            )
        return extra

    @field_serializer("extra")
    def _mask(self, extra: dict[str, str]) -> dict[str, object]:
        return mask_properties(extra)


__all__ = [
    "AuditSettings",
    "ConnectorDatabase",
    "ConnectorSettings",
    "DatabaseSettings",
    "IssuerSettings",
    "KafkaSettings",
    "LedgerSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "PipelineSettings",
    "RetrySettings",
]
