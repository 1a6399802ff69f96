"""The registry of secret values and masking by value (issue 20, "secrets never leak"),
and the transport settings that refuse insecure setups with file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from syncd.config import ConfigError, is_secret_property, load_config, mask_properties
from tests.unit.config_helpers import DEMO

DEMO_TEXT = DEMO.read_text(encoding="utf-8")
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCleakpemline01\n"
    "leakpemline02leakpemline02leakpemline02leakpemline02leakpemline\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("SYNCD_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, *edits: tuple[str, str]) -> tuple[Path, str]:
    text = DEMO_TEXT
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


DSN = "  dsn: postgresql+psycopg://postgres@127.0.0.1:15432/erp\n"
KAFKA_GROUP = "  group_id: syncd\n"


def test_masked_dsn_masks_the_password_and_secret_query_parameters(tmp_path):
    dsn = (
        "postgresql+psycopg://syncd:pw-in-userinfo@db:5432/erp"
        "?sslmode=verify-full&sslpassword=pw-of-the-key&password=pw-in-query"
    )
    path, _ = write(tmp_path, (DSN, f"  dsn: {dsn}\n"))
    config = load_config(path)
    masked = config.database.masked_dsn()
    assert masked.startswith("postgresql+psycopg://syncd:***@db:5432/erp?")
    assert "sslmode=verify-full" in masked
    assert "sslpassword=***" in masked and "password=***" in masked
    assert "pw-" not in masked
    assert {"pw-in-userinfo", "pw-of-the-key", "pw-in-query"} <= set(config.secret_values())
    assert "pw-" not in json.dumps(config.masked_dump())


def test_kafka_properties_are_masked_by_value(tmp_path):
    props = {
        "ssl.key.pem": PEM,
        "sasl.oauthbearer.config": "clientId=syncd clientSecret=oauth-secret-1 scope=x",
        "some.innocent.key": "principal=x password=pw-under-an-innocent-key",
        "client.id": "syncd",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example.com/token",
    }
    block = "  properties:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in props.items())
    path, _ = write(tmp_path, (KAFKA_GROUP, KAFKA_GROUP + block))
    config = load_config(path)
    dumped = config.masked_dump()["kafka"]["properties"]
    assert dumped["ssl.key.pem"] == "**********"
    assert dumped["sasl.oauthbearer.config"] == "**********"
    assert dumped["some.innocent.key"] == "**********"
    assert dumped["client.id"] == "syncd"
    assert dumped["sasl.oauthbearer.token.endpoint.url"] == "https://idp.example.com/token"
    secrets = config.secret_values()
    assert "oauth-secret-1" in secrets and "pw-under-an-innocent-key" in secrets
    assert any("leakpemline02" in s for s in secrets)
    masked = config.kafka.masked_client_config()
    assert "oauth-secret-1" not in json.dumps(masked) and "leakpem" not in json.dumps(masked)


@pytest.mark.parametrize(
    ("key", "value", "secret"),
    [
        ("ssl.keystore.password", "x1234", True),
        ("database.sslpassword", "x1234", True),
        ("anything", "-----BEGIN RSA PRIVATE KEY-----\nabc", True),
        ("sasl.jaas.config", 'ScramLoginModule required username="u" password="p";', True),
        ("database.password", "${file:/opt/secrets.properties:password}", False),
        ("database.password", "${env:ERP_DB_PASSWORD}", False),
        ("ssl.key.location", "/etc/tls/key.pem", False),
        ("poll.interval.ms", "100", False),
        ("enable.auto.commit", False, False),
    ],
)
def test_secret_property_by_key_or_value(key, value, secret):
    assert is_secret_property(key, value) is secret
    assert (mask_properties({key: value})[key] == "**********") is secret


def test_base_url_userinfo_is_masked_and_registered(tmp_path):
    path, _ = write(
        tmp_path,
        (
            "  base_url: http://127.0.0.1:18700\n",
            "  base_url: http://gateway-user:url-password-1@127.0.0.1:18700\n",
        ),
    )
    config = load_config(path)
    assert config.masked_dump()["issuer"]["base_url"] == "http://***@127.0.0.1:18700"
    assert "url-password-1" in config.secret_values()
    # The provider still gets the real URL.
    assert "url-password-1" in config.issuer.provider_settings()["base_url"]


def test_redact_scrubs_every_registered_value(tmp_path):
    path, _ = write(tmp_path, (DSN, "  dsn: postgresql+psycopg://u:db-pass-77@db/erp\n"))
    config = load_config(path)
    line = (
        'connection to "postgresql://u:db-pass-77@db" failed; '
        "app secret syncd-dev-secret-do-not-use-in-production"
    )
    redacted = config.redact(line)
    assert "db-pass-77" not in redacted
    assert "syncd-dev-secret" not in redacted


def test_connector_extra_refuses_a_literal_password(tmp_path):
    path, text = write(
        tmp_path,
        ("  extra:\n", "  extra:\n    database.password: literal-pw\n    poll.timeout.ms: '5'\n"),
    )
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(text, '  extra:')}: connector.extra: ")
    assert "database.password" in problem and "${file:" in problem and "${env:" in problem
    assert "literal-pw" not in problem


def test_connector_extra_accepts_config_provider_references(tmp_path):
    path, _ = write(
        tmp_path,
        ("  extra:\n", "  extra:\n    database.sslpassword: ${env:ERP_DB_SSLPASSWORD}\n"),
    )
    config = load_config(path)
    assert config.connector.extra["database.sslpassword"] == "${env:ERP_DB_SSLPASSWORD}"


def test_connector_password_must_be_a_reference(tmp_path):
    path, _ = write(
        tmp_path,
        (
            '  password: ""                      # loopback trust on the dev cluster\n',
            "  password: hunter2-literal\n",
        ),
    )
    [problem] = problems(path)
    assert "connector.password" in problem and "hunter2-literal" not in problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("enable.ssl.certificate.verification", "false"),
        ("ssl.endpoint.identification.algorithm", "none"),
    ],
)
def test_kafka_verification_off_is_an_error_unless_allowed(tmp_path, key, value):
    block = f"  properties:\n    {key}: {value}\n"
    path, text = write(tmp_path, (KAFKA_GROUP, KAFKA_GROUP + block))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(text, '  properties:')}: kafka.properties: ")
    assert key in problem and "kafka.allow_insecure: true" in problem
    path, _ = write(tmp_path, (KAFKA_GROUP, KAFKA_GROUP + "  allow_insecure: true\n" + block))
    assert load_config(path).kafka.client_config()[key] == value


def test_plain_http_to_a_remote_issuer_is_refused(tmp_path):
    remote = "  base_url: http://user:remote-pw@einvoice.example.com\n"
    path, text = write(tmp_path, ("  base_url: http://127.0.0.1:18700\n", remote))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(text, 'base_url')}: issuer.base_url: ")
    assert "einvoice.example.com" in problem and "allow_insecure_http" in problem
    assert "remote-pw" not in problem
    allowed = remote + "  allow_insecure_http: true\n"
    path, _ = write(tmp_path, ("  base_url: http://127.0.0.1:18700\n", allowed))
    assert load_config(path).issuer.allow_insecure_http


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "http://localhost:8080", "http://[::1]:1", "https://x.example"]
)
def test_loopback_http_and_https_are_accepted(tmp_path, url):
    path, _ = write(tmp_path, ("  base_url: http://127.0.0.1:18700\n", f"  base_url: {url}\n"))
    assert load_config(path).issuer.base_url == url


def test_issuer_tls_files(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until the client is made")
    https = "  base_url: https://einvoice.example.com\n"
    base = ("  base_url: http://127.0.0.1:18700\n", https + f"  ca_file: {ca}\n")
    assert load_config(write(tmp_path, base)[0]).issuer.ca_file == ca

    missing = ("  base_url: http://127.0.0.1:18700\n", https + f"  ca_file: {tmp_path}/nope\n")
    [problem] = problems(write(tmp_path, missing)[0])
    assert "ca_file" in problem and "not a readable file" in problem

    key_only = ("  base_url: http://127.0.0.1:18700\n", https + f"  client_key_file: {ca}\n")
    [problem] = problems(write(tmp_path, key_only)[0])
    assert "client_key_file needs client_cert_file" in problem

    plain = (
        "  base_url: http://127.0.0.1:18700\n",
        f"  base_url: http://127.0.0.1:1\n  ca_file: {ca}\n",
    )
    [problem] = problems(write(tmp_path, plain)[0])
    assert "ca_file needs an https:// base_url" in problem


def test_check_config_output_holds_no_registered_secret(tmp_path, capsys):
    from syncd.cli import main

    path, _ = write(
        tmp_path,
        (DSN, "  dsn: postgresql+psycopg://u:dsn-pw-1@db/erp?sslpassword=dsn-ssl-pw-2\n"),
        (KAFKA_GROUP, KAFKA_GROUP + "  properties:\n    ssl.key.pem: " + json.dumps(PEM) + "\n"),
    )
    for fmt in ("yaml", "json"):
        assert main(["check-config", "-c", str(path), "--format", fmt]) == 0
        out, err = capsys.readouterr()
        for secret in ("dsn-pw-1", "dsn-ssl-pw-2", "leakpemline", "syncd-dev-secret"):
            assert secret not in out + err
    assert yaml.safe_load(out)["kafka"]["properties"]["ssl.key.pem"] == "**********"


def test_proxy_userinfo_is_masked_registered_and_checked_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://env-user:env-proxy-pw@proxy.corp:3128")
    path, _ = write(
        tmp_path,
        (
            "  base_url: http://127.0.0.1:18700\n",
            "  base_url: http://127.0.0.1:18700\n"
            "  proxy: http://egress:cfg-proxy-pw@proxy.corp:3128\n",
        ),
    )
    config = load_config(path)
    assert config.masked_dump()["issuer"]["proxy"] == "http://***@proxy.corp:3128"
    assert {"cfg-proxy-pw", "env-proxy-pw"} <= set(config.secret_values())
    assert "proxy-pw" not in json.dumps(config.masked_dump())
    assert "cfg-proxy-pw" in config.issuer.provider_settings()["proxy"]  # the real value

    path, text = write(
        tmp_path,
        (
            "  base_url: http://127.0.0.1:18700\n",
            "  base_url: http://127.0.0.1:18700\n  proxy: socks5://u:sock-pw-9@proxy:1080\n",
        ),
    )
    [problem] = problems(path)
    assert f":{line_of(text, 'proxy:')}" in problem and "need http://" in problem
    assert "sock-pw-9" not in problem and "socks5://***@proxy:1080" in problem
