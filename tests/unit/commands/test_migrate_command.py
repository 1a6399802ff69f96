from pathlib import Path

import pytest

from syncd.cli import main
from syncd.commands.migrate import MigrateConfigError, database_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "syncd.yaml"
    p.write_text(text)
    return p


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SYNCD_DATABASE__DSN",
        "SYNCD_DATABASE__DSN_FILE",
        "SYNCD_DATABASE__SCHEMA_NAME",
        "SYNCD_SECRETS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, "database:\n  dsn: postgresql://file/erp\n  schema_name: from_file\n")
    assert database_settings(cfg, None, None) == ("postgresql://file/erp", "from_file")
    monkeypatch.setenv("SYNCD_DATABASE__DSN", "postgresql://env/erp")
    monkeypatch.setenv("SYNCD_DATABASE__SCHEMA_NAME", "e")
    assert database_settings(cfg, None, None) == ("postgresql://env/erp", "e")
    assert database_settings(cfg, "postgresql://flag/erp", "f") == (
        "postgresql://flag/erp",
        "f",
    )


def test_secrets_dir_and_dsn_file_variable_as_check_config_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config check-config accepts (DSN in a mounted secret) is one migrate can use."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database__dsn").write_text("postgresql://u:pw@from-secrets/erp\n")
    cfg = write(tmp_path, f"secrets_dir: {secrets}\ndatabase:\n  schema_name: led\n")
    assert database_settings(cfg, None, None) == ("postgresql://u:pw@from-secrets/erp", "led")
    # The variable pointing at a file, with no config at all.
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://u:pw@from-file/erp\n")
    monkeypatch.setenv("SYNCD_DATABASE__DSN_FILE", str(dsn_file))
    assert database_settings(None, None, None) == ("postgresql://u:pw@from-file/erp", "syncd")
    # SYNCD_SECRETS_DIR without a config.
    monkeypatch.delenv("SYNCD_DATABASE__DSN_FILE")
    monkeypatch.setenv("SYNCD_SECRETS_DIR", str(secrets))
    assert database_settings(None, None, None)[0] == "postgresql://u:pw@from-secrets/erp"


def test_migrate_sql_with_the_dsn_in_a_secrets_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database__dsn").write_text("postgresql://u:pw@nowhere/erp")
    cfg = write(tmp_path, f"secrets_dir: {secrets}\ndatabase: {{schema_name: led}}\n")
    assert main(["migrate", "-c", str(cfg), "--sql"]) == 0
    assert 'CREATE SCHEMA IF NOT EXISTS "led"' in capsys.readouterr().out


def test_dsn_file_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "..data" / "dsn"
    real.parent.mkdir()
    real.write_text("postgresql://u:pw@db/erp\n")
    link = tmp_path / "dsn"
    link.symlink_to(real)
    cfg = write(tmp_path, f"database:\n  dsn_file: {link}\n")
    assert database_settings(cfg, None, None) == ("postgresql://u:pw@db/erp", "syncd")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("database: {}\n", "database.dsn"),
        ("database: [1]\n", "must be a mapping"),
        ("- a\n", "top level"),
        ("database: {dsn_file: /nonexistent/dsn}\n", "/nonexistent/dsn"),
        (": : :\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    cfg = write(tmp_path, text)
    with pytest.raises(MigrateConfigError) as err:
        database_settings(cfg, None, None)
    assert needle in str(err.value) and str(cfg) in str(err.value)


def test_missing_dsn_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SYNCD_DATABASE__DSN", raising=False)
    assert main(["migrate"]) == 2
    assert "--dsn" in capsys.readouterr().err


def test_sql_mode_needs_no_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["migrate", "--dsn", "postgresql://u:pw@nowhere/erp", "--schema", "led", "--sql"]) == 0
    )
    out = capsys.readouterr().out
    assert 'CREATE SCHEMA IF NOT EXISTS "led"' in out and "CREATE TABLE led.documents" in out


def test_bad_schema_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["migrate", "--dsn", "postgresql://nowhere/erp", "--schema", "Bad-Name", "--sql"]) == 2
    )
    assert "Bad-Name" in capsys.readouterr().err
