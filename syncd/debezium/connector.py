"""The Debezium Postgres connector config, derived from the syncd config.

Deriving it (rather than hand-writing JSON next to the YAML) keeps the captured
tables, the topic prefix and the converter settings syncd relies on in one
reviewed place. The output is the Kafka Connect REST body `{"name", "config"}`;
`PUT /connectors/<name>/config` takes its `config` part.

No secret is ever rendered: the database password is a Kafka Connect config
provider reference (`${file:...}`, `${env:...}`) that the Connect worker resolves,
so the secret does not show up in the REST API or in git. The config refuses a
literal password (`connector.password`) or any literal secret in `connector.extra`;
the password of syncd's own DSN is never carried over.

TLS to PostgreSQL is carried over: the DSN's `sslmode`, `sslrootcert`, `sslcert` and
`sslkey` become `database.sslmode` & co. (`connector.database.*` overrides each, for
files at other paths on the Connect workers), so the connector reads the ERP with the
same verification syncd uses -- a `verify-full` deployment does not get a connector
that silently falls back to plain text. The key's password is only ever a reference.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from syncd.config import SyncdConfig

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"


def render(config: SyncdConfig, name: str | None = None) -> dict[str, Any]:
    """The REST body for the connector capturing every configured table."""
    url = make_url(config.database.dsn_value())
    override = config.connector.database
    conn = config.connector
    props: dict[str, str] = {
        "connector.class": POSTGRES_CONNECTOR,
        "tasks.max": "1",
        "database.hostname": override.hostname or url.host or "localhost",
        "database.port": str(override.port or url.port or 5432),
        "database.user": override.user or url.username or "postgres",
        "database.password": conn.password,
        "database.dbname": override.dbname or url.database or "",
        "topic.prefix": config.kafka.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": conn.slot_name or "",
        "publication.name": conn.publication_name or "",
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(config.captured_tables()),
        "snapshot.mode": conn.snapshot_mode,
        "decimal.handling.mode": "precise",
        "tombstones.on.delete": "true",
        "heartbeat.interval.ms": str(conn.heartbeat_interval_ms),
        "provide.transaction.metadata": "true",
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "true",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "true",
        "value.converter.replace.null.with.default": "false",
        "key.converter.replace.null.with.default": "false",
    }
    props.update(tls_properties(config))
    props.update(conn.extra)
    return {"name": name or conn.name, "config": props}


#: DSN query parameter -> the connector property it becomes.
_TLS_FROM_DSN = {
    "sslmode": "database.sslmode",
    "sslrootcert": "database.sslrootcert",
    "sslcert": "database.sslcert",
    "sslkey": "database.sslkey",
}


def tls_properties(config: SyncdConfig) -> dict[str, str]:
    """`database.ssl*` of the connector: `connector.database.*`, else the DSN's."""
    query = make_url(config.database.dsn_value()).query
    override = config.connector.database
    props: dict[str, str] = {}
    for param, prop in _TLS_FROM_DSN.items():
        value = getattr(override, param)
        if value is None:
            given = query.get(param)
            value = given if isinstance(given, str) or given is None else given[-1]
        if value:
            props[prop] = value
    if override.sslpassword is not None:
        props["database.sslpassword"] = override.sslpassword
    return props
