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
    props.update(conn.extra)
    return {"name": name or conn.name, "config": props}
