"""Every operator command with its dependencies down: a real refused connection (closed
loopback ports, no mocks), answered with one line naming the dependency and its exit code
-- no librdkafka lines, no traceback, no healthy-looking report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.commands import (
    EXIT_DATABASE,
    EXIT_DATABASE_AND_KAFKA,
    EXIT_KAFKA,
    EXIT_OK,
    unreachable_exit,
)
from tests.unit.config_helpers import DEMO

KAFKA_LINE = re.compile(r"^syncd [a-z-]+: Kafka 127\.0\.0\.1:1 unreachable: .+$")
DB_LINE = re.compile(
    r"^syncd [a-z-]+: database postgresql\+psycopg://postgres@127\.0\.0\.1:1/erp "
    r"unreachable: .*Connection refused.*$"
)


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SYNCD_DATABASE__DSN", "SYNCD_KAFKA__BOOTSTRAP_SERVERS", "SYNCD_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)


def config(tmp_path: Path, *, kafka_down: bool = True, db_down: bool = True) -> str:
    text = DEMO.read_text(encoding="utf-8")
    if kafka_down:
        text = text.replace("127.0.0.1:19092", "127.0.0.1:1")
    if db_down:
        text = text.replace("127.0.0.1:15432", "127.0.0.1:1")
    path = tmp_path / "down.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def stderr_lines(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    # librdkafka's own format (%3|...|FAIL|) or its line through a logger (FAIL [...])
    assert not [line for line in lines if "FAIL" in line or line.startswith("%")], err
    assert "Traceback" not in err
    return lines


def test_status_with_everything_down_says_so_and_shows_no_zero_counts(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "-c", config(tmp_path), "--kafka-timeout", "1"])
    out, err = capfd.readouterr()
    assert code == EXIT_DATABASE_AND_KAFKA
    lines = stderr_lines(err)
    assert len(lines) == 2
    assert KAFKA_LINE.match(lines[0]) and DB_LINE.match(lines[1]), lines
    assert "0 total" not in out and "Dead / blocked" not in out  # nothing read: no report


def test_status_json_reports_unknown_not_zero(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "-c", config(tmp_path), "--kafka-timeout", "1", "--json"])
    out, err = capfd.readouterr()
    assert code == EXIT_DATABASE_AND_KAFKA
    report = json.loads(out)
    assert report["counts"] is None and report["total"] is None
    assert report["ok"] is False and report["exit_code"] == EXIT_DATABASE_AND_KAFKA
    assert set(report["unreachable"]) == {"database", "kafka"}
    assert len(stderr_lines(err)) == 2


def test_check_config_live(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["check-config", "-c", config(tmp_path), "--live", "--quiet", "--timeout", "1"])
    _out, err = capfd.readouterr()
    assert code == EXIT_DATABASE_AND_KAFKA
    lines = stderr_lines(err)
    assert len(lines) == 2
    assert DB_LINE.match(lines[0]) and KAFKA_LINE.match(lines[1]), lines


@pytest.mark.parametrize("action", ["list", "replay"])
def test_dlq(action: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    reason = ["--reason", "fixed the mapping"] if action == "replay" else []
    code = main(["dlq", action, "-c", config(tmp_path), "--timeout", "1", *reason])
    out, err = capfd.readouterr()
    assert code == EXIT_KAFKA
    (line,) = stderr_lines(err)
    assert KAFKA_LINE.match(line), line
    assert out == ""


def test_dlq_replay_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["dlq", "replay", "-c", config(tmp_path), "--timeout", "1", "--json", "--reason", "r"]
    )
    out, err = capfd.readouterr()
    assert code == EXIT_KAFKA
    assert json.loads(out)["exit_code"] == EXIT_KAFKA
    assert len(stderr_lines(err)) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["retry", "--document", "1", "--reason", "provider fixed"],
        ["migrate", "--check"],
        ["migrate"],
    ],
)
def test_database_commands(
    argv: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "-c", config(tmp_path, kafka_down=False)])
    out, err = capfd.readouterr()
    assert code == EXIT_DATABASE
    (line,) = stderr_lines(err)  # no alembic INFO lines either
    assert DB_LINE.match(line), line
    assert out == ""


@pytest.mark.parametrize(
    "argv", [["retry", "--document", "1", "--reason", "provider fixed"], ["migrate", "--check"]]
)
def test_database_commands_json(
    argv: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "-c", config(tmp_path, kafka_down=False), "--json"])
    out, _err = capfd.readouterr()
    answer = json.loads(out)
    assert code == EXIT_DATABASE and answer["exit_code"] == EXIT_DATABASE
    assert answer["ok"] is False and "unreachable" in answer["error"]


def test_retry_malformed_reference_is_a_usage_error_before_any_connection(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(["retry", "-c", config(tmp_path), "--document", "what?", "--json", "--reason", "r"])
    out, _err = capfd.readouterr()
    assert code == 2 and json.loads(out)["reason"] == "usage"


def test_exit_codes_of_unreachable_dependencies() -> None:
    assert unreachable_exit([]) == EXIT_OK
    assert unreachable_exit(["database"]) == EXIT_DATABASE
    assert unreachable_exit(["kafka"]) == EXIT_KAFKA
    assert unreachable_exit(["kafka", "database"]) == EXIT_DATABASE_AND_KAFKA
    assert len({0, 1, 2, 3, EXIT_DATABASE, EXIT_KAFKA, EXIT_DATABASE_AND_KAFKA, 7}) == 8


def test_verbose_shows_librdkafka_lines_through_the_logger_rate_limited(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = main(["-v", "dlq", "list", "-c", config(tmp_path), "--timeout", "2"])
    _out, err = capfd.readouterr()
    assert code == EXIT_KAFKA
    fails = [line for line in err.splitlines() if "FAIL" in line]
    assert fails and all(" ERROR syncd.kafka: FAIL " in line for line in fails)
    # librdkafka repeats the refused connection every ~50 ms: one line a minute remains
    assert len(fails) <= 2, fails
    assert not [line for line in err.splitlines() if line.startswith("%")]
