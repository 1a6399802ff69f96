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
    assert conf["table.include.list"] == "erp.sales_order,erp.sales_order_line"
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
