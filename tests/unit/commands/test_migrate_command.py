from pathlib import Path

import pytest

from syncd.cli import main
from syncd.commands.migrate import MigrateConfigError, database_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "syncd.yaml"
    p.write_text(text)
    return p


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "database:\n  dsn: postgresql://file/erp\n  schema_name: from_file\n")
    assert database_settings(cfg, None, None, {}) == ("postgresql://file/erp", "from_file")
    env = {"SYNCD_DATABASE__DSN": "postgresql://env/erp", "SYNCD_DATABASE__SCHEMA_NAME": "e"}
    assert database_settings(cfg, None, None, env) == ("postgresql://env/erp", "e")
    assert database_settings(cfg, "postgresql://flag/erp", "f", env) == (
        "postgresql://flag/erp",
        "f",
    )


def test_dsn_file_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "..data" / "dsn"
    real.parent.mkdir()
    real.write_text("postgresql://u:pw@db/erp\n")
    link = tmp_path / "dsn"
    link.symlink_to(real)
    cfg = write(tmp_path, f"database:\n  dsn_file: {link}\n")
    assert database_settings(cfg, None, None, {}) == ("postgresql://u:pw@db/erp", "syncd")


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
        database_settings(cfg, None, None, {})
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
