import os
from pathlib import Path

import pytest

from syncd.config import ConfigError, SnapshotPolicy, load_config, parse_config
from syncd.config.settings import NUONUO_FIELDS
from syncd.pipeline.classify import decode_options
from tests.unit.config_helpers import DEMO, demo_config

DEMO_TEXT = DEMO.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_"):
            monkeypatch.delenv(name)


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def broken(tmp_path: Path, old: str, new: str, text: str = DEMO_TEXT) -> tuple[Path, str]:
    assert old in text, old
    changed = text.replace(old, new, 1)
    path = tmp_path / "config.yaml"
    path.write_text(changed, encoding="utf-8")
    return path, changed


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


class TestDemo:
    def test_loads_and_resolves_defaults(self):
        config = demo_config()
        doc = config.documents["sales_order"]
        assert doc.name == "sales_order"
        assert doc.topic == "erp.erp.sales_order"
        assert doc.seller is not None and doc.seller.tax_id == "91310115MA1K4PLN89"
        assert doc.snapshot is SnapshotPolicy.ISSUE_IF_UNINVOICED
        assert doc.lines.references == "id"
        assert doc.own_columns() == {
            "invoice_no",
            "invoice_status",
            "invoice_error",
            "invoiced_at",
            "invoice_url",
            "red_invoice_no",
        }
        assert config.topics() == ["erp.erp.sales_order", "erp.erp.sales_return_line"]
        assert config.captured_tables() == [
            "erp.sales_order",
            "erp.sales_order_line",
            "erp.sales_return_line",
        ]
        assert config.kafka.group_id == "syncd"
        assert config.kafka.dead_letter_topic == "syncd.dead-letter"
        assert config.pipeline.max_in_flight == 2048
        assert config.pipeline.drain_deadline_seconds == 20
        assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9464)
        assert config.database.schema_name == "syncd"

    def test_decode_options_carry_decimal_scales(self):
        options = decode_options(demo_config())
        assert options.decimal_scales["erp.sales_order_line.unit_price"] == 8

    def test_defaults_when_sections_are_left_out(self):
        text = DEMO_TEXT
        for section in ("pipeline:", "metrics:", "logging:", "connector:"):
            start = text.index("\n" + section) + 1
            end = text.index("\n\n", start)
            text = text[:start] + text[end + 2 :]
        config = parse_config(text, "c.yaml")
        assert config.metrics.host == "0.0.0.0"
        assert config.pipeline.retry.max_attempts == 10
        assert config.connector.name == "erp-pg"
        assert config.connector.slot_name == "syncd_erp"


class TestLocatedErrors:
    def test_unknown_key_names_file_line_path_and_suggestion(self, tmp_path):
        path, text = broken(
            tmp_path,
            "      column: status\n      becomes: CONFIRMED",
            "      colum: status\n      becomes: CONFIRMED",
        )
        line = line_of(text, "colum: status")
        assert problems(path) == [
            f"{path}:{line}: documents.sales_order.qualifies.colum: "
            "unknown key 'colum' -- did you mean 'column'?"
        ]

    def test_all_problems_are_listed_at_once(self, tmp_path):
        path, text = broken(tmp_path, "  group_id: syncd", "  groupid: syncd")
        text = text.replace("snapshot: issue_if_uninvoiced", "snapshot: issue_if_uninvoced")
        path.write_text(text)
        found = problems(path)
        assert len(found) == 2
        assert found[0] == (
            f"{path}:{line_of(text, 'groupid')}: kafka.groupid: unknown key "
            "'groupid' -- did you mean 'group_id'?"
        )
        assert found[1].endswith(
            "documents.sales_order.snapshot: 'issue_if_uninvoced' is not one of ignore, "
            "issue_if_uninvoiced -- did you mean 'issue_if_uninvoiced'?"
        )

    def test_unknown_key_without_close_match_lists_allowed_keys(self, tmp_path):
        path, _ = broken(tmp_path, "  pool_size: 5", "  zzz: 5")
        (message,) = problems(path)
        assert "unknown key 'zzz' (allowed: dsn, dsn_file, pool_size" in message

    def test_nested_list_paths(self, tmp_path):
        old = "    reverses:\n      column: status\n      becomes: CANCELLED"
        new = (
            "    reverses:\n      all:\n        - {column: status, becomes: CANCELLED}\n"
            "        - {column: invoice_no, is_nul: false}"
        )
        path, text = broken(tmp_path, old, new)
        (message,) = problems(path)
        line = line_of(text, "is_nul:")
        assert message == (
            f"{path}:{line}: documents.sales_order.reverses.all[1].is_nul: "
            "unknown key 'is_nul' -- did you mean 'is_null'?"
        )

    def test_missing_key_points_at_the_parent(self, tmp_path):
        path, text = broken(tmp_path, "      order_by: line_no\n", "")
        (message,) = problems(path)
        assert message == (
            f"{path}:{line_of(text, '    lines:')}: documents.sales_order.lines."
            "order_by: missing required key 'order_by'"
        )

    def test_bad_value_shows_input(self, tmp_path):
        path, text = broken(tmp_path, "  port: 9464", "  port: ninety")
        (message,) = problems(path)
        assert message.startswith(f"{path}:{line_of(text, 'ninety')}: metrics.port: ")
        assert "(got 'ninety')" in message

    def test_secret_values_are_never_echoed(self, tmp_path):
        path, _ = broken(
            tmp_path,
            "  app_secret: syncd-dev-secret-do-not-use-in-production",
            "  app_secret: [hunter2]",
        )
        (message,) = problems(path)
        assert "hunter2" not in message
        assert "issuer.app_secret" in message

    def test_duplicate_keys_are_errors(self, tmp_path):
        path, text = broken(tmp_path, "  group_id: syncd", "  group_id: syncd\n  group_id: other")
        (message,) = problems(path)
        assert message.startswith(
            f"{path}:{line_of(text, 'group_id: other')}: kafka.group_id: duplicate key"
        )

    def test_yaml_syntax_error_has_a_line(self, tmp_path):
        path, _ = broken(tmp_path, "  group_id: syncd", "  group_id: [syncd")
        (message,) = problems(path)
        assert message.startswith(f"{path}:")
        assert "YAML syntax" in message

    def test_unreadable_file(self, tmp_path):
        (message,) = problems(tmp_path / "nope.yaml")
        assert "cannot read config" in message

    def test_invalid_seller_tax_id(self, tmp_path):
        path, _ = broken(tmp_path, "tax_id: 91310115MA1K4PLN89", "tax_id: 91310115MA1K4PLN8E")
        (message,) = problems(path)
        assert "seller.tax_id" in message and "unified social credit code" in message

    def test_field_source_needs_exactly_one_source(self, tmp_path):
        path, _ = broken(
            tmp_path, 'remark: {template: "{order_no}"}', "remark: {column: remark, const: x}"
        )
        (message,) = problems(path)
        assert "documents.sales_order.header.remark: give exactly one of" in message

    def test_snapshot_policy_needs_invoice_no_in_source(self, tmp_path):
        path, _ = broken(
            tmp_path,
            "      table: erp.sales_order\n      key_columns: [id]\n      columns:",
            "      table: erp.invoice_log\n      key_columns: [id]\n      columns:",
        )
        (message,) = problems(path)
        assert "use snapshot: ignore" in message

    def test_one_table_one_document(self, tmp_path):
        doc_start = DEMO_TEXT.index("  sales_order:\n")
        doc_end = DEMO_TEXT.index("\n\n", doc_start)
        block = DEMO_TEXT[doc_start:doc_end].replace("  sales_order:", "  sales_order_copy:", 1)
        text = DEMO_TEXT[:doc_end] + "\n" + block + DEMO_TEXT[doc_end:]
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "c.yaml")
        assert "both use table erp.sales_order" in str(exc.value)

    def test_connector_password_must_be_a_placeholder(self, tmp_path):
        path, _ = broken(tmp_path, '  password: ""', "  password: s3cret")
        (message,) = problems(path)
        assert "connector.password: must be a config-provider placeholder" in message
        assert "s3cret" not in message

    def test_document_name_pattern(self, tmp_path):
        path, _ = broken(tmp_path, "  sales_order:\n", "  Sales-Order:\n")
        (message,) = problems(path)
        assert "document type name 'Sales-Order'" in message


class TestEnvironment:
    def test_env_overrides_nested_values(self, monkeypatch):
        monkeypatch.setenv("SYNCD_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
        monkeypatch.setenv("SYNCD_PIPELINE__RETRY__MAX_ATTEMPTS", "3")
        monkeypatch.setenv("SYNCD_DOCUMENTS__SALES_ORDER__SNAPSHOT", "ignore")
        config = demo_config()
        assert config.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
        assert config.kafka.topic_prefix == "erp"  # the rest of the section is kept
        assert config.pipeline.retry.max_attempts == 3
        assert config.documents["sales_order"].snapshot is SnapshotPolicy.IGNORE
        assert config.documents["sales_order"].lines.table == "erp.sales_order_line"

    def test_env_secret_override(self, monkeypatch):
        monkeypatch.setenv("SYNCD_ISSUER__APP_SECRET", "from-env")
        assert demo_config().issuer.app_secret.get_secret_value() == "from-env"

    def test_env_errors_name_the_variable(self, monkeypatch):
        monkeypatch.setenv("SYNCD_PIPELINE__MAX_IN_FLIGHT", "many")
        monkeypatch.setenv("SYNCD_KAFKA__BOOTSTRAP_SERVER", "x:1")
        with pytest.raises(ConfigError) as exc:
            demo_config()
        found = [str(p) for p in exc.value.problems]
        assert (
            "environment SYNCD_KAFKA__BOOTSTRAP_SERVER: kafka.bootstrap_server: unknown key "
            "'bootstrap_server' -- did you mean 'bootstrap_servers'?"
        ) in found
        assert any(
            p.startswith("environment SYNCD_PIPELINE__MAX_IN_FLIGHT: pipeline.max_in_flight: ")
            for p in found
        )


def k8s_secret_volume(root: Path, files: dict[str, str]) -> Path:
    """The layout kubelet writes: files are symlinks into a timestamped dir via ..data."""
    volume = root / "secrets"
    stamp = volume / "..2026_11_27_23_00_00.123456789"
    stamp.mkdir(parents=True)
    for name, content in files.items():
        (stamp / name).write_text(content, encoding="utf-8")
    (volume / "..data").symlink_to(stamp.name)
    for name in files:
        (volume / name).symlink_to(Path("..data") / name)
    return volume


class TestSecrets:
    DSN = "postgresql+psycopg://syncd:p4ss-w0rd@db.internal:5432/erp"

    def test_dsn_file_through_kubernetes_symlinks(self, tmp_path):
        volume = k8s_secret_volume(tmp_path, {"dsn": self.DSN + "\n"})
        assert (volume / "dsn").is_symlink()
        text = DEMO_TEXT.replace(
            "  dsn: postgresql+psycopg://postgres@127.0.0.1:15432/erp",
            f"  dsn_file: {volume / 'dsn'}",
        )
        config = parse_config(text, "c.yaml")
        assert config.database.dsn_value() == self.DSN  # trailing newline dropped
        assert "p4ss-w0rd" not in repr(config)
        assert "p4ss-w0rd" not in str(config.masked_dump())
        assert config.masked_dump()["database"]["dsn"] == (
            "postgresql+psycopg://syncd:***@db.internal:5432/erp"
        )

    def test_secrets_dir_through_kubernetes_symlinks(self, tmp_path):
        volume = k8s_secret_volume(
            tmp_path,
            {
                "database__dsn": self.DSN,
                "issuer__app_secret": "platform-secret\n",
            },
        )
        text = DEMO_TEXT.replace("\nkafka:", f"\nsecrets_dir: {volume}\n\nkafka:", 1)
        config = parse_config(text, "c.yaml")
        assert config.database.dsn_value() == self.DSN
        assert config.issuer.app_secret.get_secret_value() == "platform-secret"
        dumped = str(config.masked_dump())
        assert "platform-secret" not in dumped and "p4ss-w0rd" not in dumped

    def test_secrets_dir_from_env(self, tmp_path, monkeypatch):
        volume = k8s_secret_volume(tmp_path, {"issuer__app_secret": "s2"})
        monkeypatch.setenv("SYNCD_SECRETS_DIR", str(volume))
        assert demo_config().issuer.app_secret.get_secret_value() == "s2"

    def test_secret_file_rotation_is_read_at_load(self, tmp_path):
        volume = k8s_secret_volume(tmp_path, {"app_secret": "old"})
        new = volume / "..2026_11_28_00_00_00.1"
        new.mkdir()
        (new / "app_secret").write_text("new")
        (volume / "..data").unlink()
        (volume / "..data").symlink_to(new.name)
        text = DEMO_TEXT.replace(
            "  app_secret: syncd-dev-secret-do-not-use-in-production",
            f"  app_secret_file: {volume / 'app_secret'}",
        )
        assert parse_config(text).issuer.app_secret.get_secret_value() == "new"

    def test_missing_secret_file(self, tmp_path):
        text = DEMO_TEXT.replace(
            "  app_secret: syncd-dev-secret-do-not-use-in-production",
            f"  app_secret_file: {tmp_path / 'absent'}",
        )
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "c.yaml")
        assert "issuer: cannot read secret file" in str(exc.value)

    def test_value_and_file_together(self, tmp_path):
        secret = tmp_path / "s"
        secret.write_text("x")
        text = DEMO_TEXT.replace(
            "  app_secret: syncd-dev-secret-do-not-use-in-production",
            f"  app_secret: a\n  app_secret_file: {secret}",
        )
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "c.yaml")
        assert "give either app_secret or app_secret_file" in str(exc.value)

    def test_secrets_dir_must_exist(self, tmp_path):
        text = DEMO_TEXT.replace("\nkafka:", f"\nsecrets_dir: {tmp_path / 'none'}\n\nkafka:", 1)
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "c.yaml")
        assert "secrets_dir" in str(exc.value)


class TestKafkaSecurity:
    SASL = """kafka:
  bootstrap_servers: broker:9093
  topic_prefix: erp
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: syncd
  sasl_password_file: {pw}
  ssl_ca_location: /etc/ssl/ca.pem
  properties:
    ssl.endpoint.identification.algorithm: https
    sasl.oauthbearer.client.secret: hidden
    enable.idempotence: true
"""

    def config_text(self, tmp_path, kafka: str) -> str:
        start = DEMO_TEXT.index("kafka:")
        end = DEMO_TEXT.index("\n\n", start)
        return DEMO_TEXT[:start] + kafka.rstrip("\n") + DEMO_TEXT[end:]

    def test_sasl_tls_passthrough_and_masking(self, tmp_path):
        pw = tmp_path / "pw"
        pw.write_text("kafka-pass\n")
        config = parse_config(self.config_text(tmp_path, self.SASL.format(pw=pw)))
        conf = config.kafka.client_config()
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.password"] == "kafka-pass"
        assert conf["ssl.ca.location"] == "/etc/ssl/ca.pem"
        assert conf["enable.idempotence"] == "true"
        masked = config.kafka.masked_client_config()
        assert masked["sasl.password"] == "**********"
        assert masked["sasl.oauthbearer.client.secret"] == "**********"
        dumped = str(config.masked_dump())
        assert "kafka-pass" not in dumped and "hidden" not in dumped

    def test_sasl_needs_credentials(self, tmp_path):
        text = self.config_text(
            tmp_path,
            "kafka:\n  bootstrap_servers: b:1\n  topic_prefix: erp\n"
            "  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n",
        )
        with pytest.raises(ConfigError) as exc:
            parse_config(text)
        assert "needs sasl_username and sasl_password" in str(exc.value)

    def test_typed_settings_cannot_be_shadowed(self, tmp_path):
        text = self.config_text(
            tmp_path,
            "kafka:\n  bootstrap_servers: b:1\n  topic_prefix: erp\n"
            "  properties:\n    sasl.password: x\n",
        )
        with pytest.raises(ConfigError) as exc:
            parse_config(text)
        assert "set 'sasl.password' with kafka.sasl_password" in str(exc.value)


def test_documented_example_is_valid(tmp_path):
    from tests.unit.config_helpers import EXAMPLE

    volume = k8s_secret_volume(
        tmp_path,
        {
            "kafka-sasl-password": "kafka-pass\n",
            "database-dsn": "postgresql+psycopg://syncd:pw@erp-db:5432/erp\n",
            "issuer-app-secret": "app-secret\n",
        },
    )
    text = EXAMPLE.read_text(encoding="utf-8").replace("/var/run/secrets/syncd", str(volume))
    config = parse_config(text, "example.yaml")
    doc = config.documents["billing"]
    assert doc.topic == "erpprod.sales.billing_document"
    assert doc.snapshot is SnapshotPolicy.IGNORE
    assert config.kafka.client_config()["sasl.password"] == "kafka-pass"
    assert config.database.masked_dsn() == "postgresql+psycopg://syncd:***@erp-db:5432/erp"


def test_issuer_section_feeds_the_provider_settings_model():
    """Drift guard: the issuer section must stay acceptable to the provider's own model."""
    from syncd.issuers.registry import settings_model

    config = demo_config()
    model = settings_model(config.issuer.provider)
    settings = model.model_validate(config.issuer.provider_settings())
    assert settings.app_secret.get_secret_value() == "syncd-dev-secret-do-not-use-in-production"
    assert settings.base_url.rstrip("/") == "http://127.0.0.1:18700"
    ours = set(type(config.issuer).model_fields)
    assert ours - set(NUONUO_FIELDS) <= set(model.model_fields)
    assert set(config.issuer.provider_settings()) <= set(model.model_fields)
    # Every field of the section is known to the Nuonuo provider's model too.
    assert ours <= set(settings_model("nuonuo").model_fields)


def test_nuonuo_issuer_section_feeds_its_provider_model(tmp_path):
    from syncd.config.settings import IssuerSettings
    from syncd.issuers.registry import settings_model

    secret = tmp_path / "nuonuo-secret"
    secret.write_text("app-secret-from-file\n", encoding="utf-8")
    issuer = IssuerSettings.model_validate(
        {
            "provider": "nuonuo",
            "base_url": "https://sdk.nuonuo.com",
            "app_key": "SD63236305",
            "app_secret_file": str(secret),
            "seller_tax_id": "91310115MA1K4PLN89",
        }
    )
    settings = settings_model("nuonuo").model_validate(issuer.provider_settings())
    assert settings.app_secret.get_secret_value() == "app-secret-from-file"
    assert settings.token_endpoint() == "https://open.nuonuo.com/accessToken"
    with pytest.raises(ValueError, match="seller_tax_id"):
        IssuerSettings.model_validate(
            {
                "provider": "nuonuo",
                "base_url": "https://x.example",
                "app_key": "k",
                "app_secret": "s",
            }
        )
    with pytest.raises(ValueError, match=r"only for issuer\.provider nuonuo"):
        IssuerSettings.model_validate(
            {
                "base_url": "https://x.example",
                "app_key": "k",
                "app_secret": "s",
                "seller_tax_id": "91310115MA1K4PLN89",
            }
        )


def _model_keys_of_demo() -> list[tuple[tuple, int, int]]:
    """(path, line, column) of every key of config/demo.yaml that is a model field."""
    import yaml

    from syncd.config import SyncdConfig
    from syncd.config.loader import _keys_at

    found: list[tuple[tuple, int, int]] = []

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            allowed = _keys_at(SyncdConfig, path)
            for key_node, value in node.value:
                key = key_node.value
                if allowed is not None and key in allowed:
                    found.append(
                        ((*path, key), key_node.start_mark.line, key_node.start_mark.column)
                    )
                walk(value, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    walk(yaml.compose(DEMO_TEXT, Loader=yaml.SafeLoader), ())
    return found


@pytest.mark.parametrize(
    ("path", "line", "column"),
    _model_keys_of_demo(),
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_every_misspelt_key_is_located_and_corrected(path, line, column):
    lines = DEMO_TEXT.splitlines(keepends=True)
    key = str(path[-1])
    text = lines[line]
    assert text[column : column + len(key)] == key
    lines[line] = text[:column] + key + "x" + text[column + len(key) :]
    with pytest.raises(ConfigError) as exc:
        parse_config("".join(lines), "demo.yaml")
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path[:-1])
    dotted = dotted.replace(".[", "[")
    expected = (
        f"demo.yaml:{line + 1}: {dotted + '.' if dotted else ''}{key}x: unknown key "
        f"'{key}x' -- did you mean '{key}'?"
    )
    assert expected in [str(p) for p in exc.value.problems]
