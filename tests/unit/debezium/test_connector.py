import json

import pytest

from syncd.cli import main
from syncd.config import parse_config
from syncd.debezium.connector import render
from tests.unit.config_helpers import DEMO, ROOT, demo_config

GENERATED = ROOT / "connectors" / "erp-demo.json"


def test_checked_in_connector_is_generated_from_the_demo_config():
    """connectors/erp-demo.json is `syncd connectors render -c config/demo.yaml`."""
    assert json.loads(GENERATED.read_text(encoding="utf-8")) == render(demo_config())


def test_cli_output_is_byte_identical_to_the_file(capsys):
    assert main(["connectors", "render", "-c", str(DEMO)]) == 0
    assert capsys.readouterr().out == GENERATED.read_text(encoding="utf-8")


def test_settings_syncd_relies_on():
    body = render(demo_config())
    assert body["name"] == "erp-demo"
    conf = body["config"]
    assert conf["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert (
        conf["database.hostname"],
        conf["database.port"],
        conf["database.user"],
        conf["database.dbname"],
    ) == ("127.0.0.1", "15432", "postgres", "erp")
    assert conf["topic.prefix"] == "erp"
    assert conf["plugin.name"] == "pgoutput"
    assert conf["publication.autocreate.mode"] == "filtered"
    assert conf["table.include.list"] == (
        "erp.sales_order,erp.sales_order_line,erp.sales_return_line"
    )
    assert conf["snapshot.mode"] == "initial"
    assert conf["decimal.handling.mode"] == "precise"
    assert conf["tombstones.on.delete"] == "true"
    assert conf["provide.transaction.metadata"] == "true"
    assert conf["value.converter.schemas.enable"] == "true"
    assert conf["value.converter.replace.null.with.default"] == "false"
    assert all(isinstance(v, str) for v in conf.values())


def test_password_is_a_placeholder_never_the_dsn_password():
    text = (
        DEMO.read_text()
        .replace(
            "postgresql+psycopg://postgres@127.0.0.1:15432/erp",
            "postgresql+psycopg://syncd:topsecret@db.prod:5433/erp",
        )
        .replace('  password: ""                      # loopback trust on the dev cluster\n', "")
    )
    body = render(parse_config(text))
    assert "topsecret" not in json.dumps(body)
    assert body["config"]["database.password"].startswith("${file:")
    assert body["config"]["database.hostname"] == "db.prod"


def test_name_override_and_extra_properties():
    text = (
        DEMO.read_text()
        .replace("  heartbeat_interval_ms: 10000\n", "  heartbeat_interval_ms: 5000\n")
        .replace("  extra:\n", '  extra:\n    slot.drop.on.stop: "false"\n')
    )
    body = render(parse_config(text), name="other")
    assert body["name"] == "other"
    assert body["config"]["heartbeat.interval.ms"] == "5000"
    assert body["config"]["slot.drop.on.stop"] == "false"
    assert body["config"]["poll.interval.ms"] == "100"  # the demo's own extra stays


@pytest.mark.parametrize("argv", [["connectors", "render"], ["connectors"]])
def test_cli_usage_errors(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_example_connector_uses_its_own_host_user_and_placeholder(tmp_path):
    from tests.unit.config_helpers import EXAMPLE

    secrets = tmp_path / "s"
    secrets.mkdir()
    for name in ("kafka-sasl-password", "issuer-app-secret"):
        (secrets / name).write_text("x")
    (secrets / "database-dsn").write_text("postgresql+psycopg://syncd:pw@erp-db:5432/erp")
    text = EXAMPLE.read_text().replace("/var/run/secrets/syncd", str(secrets))
    conf = render(parse_config(text))["config"]
    assert conf["database.hostname"] == "erp-db-primary.internal"
    assert conf["database.user"] == "debezium"
    assert conf["database.dbname"] == "erp"
    assert conf["database.password"] == (
        "${file:/opt/kafka/external-secrets/erp-db.properties:password}"
    )
    assert conf["table.include.list"] == "sales.billing_document,sales.billing_document_item"
    assert conf["slot.max.retries"] == "10"
    assert "pw@" not in json.dumps(conf)


def test_render_refuses_a_literal_password_in_extra(tmp_path, capsys):
    """One clear config error (file:line, the key, the fix), exit 2, nothing printed on
    stdout and the password never echoed."""
    path = tmp_path / "config.yaml"
    text = DEMO.read_text().replace(
        "  extra:\n", "  extra:\n    database.sslpassword: literal-ssl-pw\n"
    )
    path.write_text(text)
    assert main(["connectors", "render", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "connector.extra: database.sslpassword: a literal secret" in err
    assert "${file:" in err and "${env:" in err
    assert "literal-ssl-pw" not in err


def test_render_passes_config_provider_references_through():
    text = DEMO.read_text().replace(
        "  extra:\n", "  extra:\n    database.sslpassword: ${env:ERP_DB_SSLPASSWORD}\n"
    )
    conf = render(parse_config(text))["config"]
    assert conf["database.sslpassword"] == "${env:ERP_DB_SSLPASSWORD}"
    assert conf["database.password"] == ""  # the demo's loopback trust


def _with_dsn(dsn: str, connector_database: str = "") -> str:
    text = DEMO.read_text().replace("postgresql+psycopg://postgres@127.0.0.1:15432/erp", dsn)
    if connector_database:
        text = text.replace("\nconnector:\n", f"\nconnector:\n  database: {connector_database}\n")
    return text


def test_postgres_tls_of_the_dsn_is_carried_into_the_connector():
    """A verify-full DSN gives a connector that verifies the same way (not a silent
    plain-text fallback), and the key's password never leaves the DSN."""
    dsn = (
        "postgresql+psycopg://syncd:pw@db.prod:5432/erp?sslmode=verify-full"
        "&sslrootcert=/etc/syncd/tls/db-ca.pem&sslcert=/etc/syncd/tls/db.crt"
        "&sslkey=/etc/syncd/tls/db.key&sslpassword=keysecret"
    )
    conf = render(parse_config(_with_dsn(dsn)))["config"]
    assert conf["database.sslmode"] == "verify-full"
    assert conf["database.sslrootcert"] == "/etc/syncd/tls/db-ca.pem"
    assert conf["database.sslcert"] == "/etc/syncd/tls/db.crt"
    assert conf["database.sslkey"] == "/etc/syncd/tls/db.key"
    assert "database.sslpassword" not in conf
    assert "keysecret" not in json.dumps(conf)


def test_connector_tls_overrides_for_the_connect_workers_paths():
    dsn = "postgresql+psycopg://syncd@db/erp?sslmode=verify-full&sslrootcert=/etc/syncd/ca.pem"
    override = (
        "{sslrootcert: /opt/kafka/tls/db-ca.pem, sslkey: /opt/kafka/tls/db.pk8, "
        "sslcert: /opt/kafka/tls/db.crt, "
        "sslpassword: '${file:/opt/kafka/external-secrets/erp-db.properties:sslpassword}'}"
    )
    conf = render(parse_config(_with_dsn(dsn, override)))["config"]
    assert conf["database.sslmode"] == "verify-full"
    assert conf["database.sslrootcert"] == "/opt/kafka/tls/db-ca.pem"
    assert conf["database.sslkey"] == "/opt/kafka/tls/db.pk8"
    assert conf["database.sslpassword"].startswith("${file:")


def test_no_tls_parameters_no_tls_properties():
    conf = render(demo_config())["config"]
    assert not [k for k in conf if k.startswith("database.ssl")]


def test_a_literal_key_password_for_the_connector_is_refused(capsys):
    from syncd.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(_with_dsn("postgresql+psycopg://syncd@db/erp", "{sslpassword: hunter22}"))
    assert "connector.database.sslpassword" in str(err.value)
    assert "hunter22" not in str(err.value)
