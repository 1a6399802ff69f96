"""The Dockerfile keeps the properties the Helm chart's security defaults rely on."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> list[list[str]]:
    """Instructions per build stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _instr(stage: list[str], name: str) -> list[str]:
    return [line[len(name) + 1 :].strip() for line in stage if line.upper().startswith(name + " ")]


def test_multi_stage_with_slim_base() -> None:
    stages = _stages()
    assert len(stages) >= 2
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert arg and "slim" in arg.group(1)
    assert _instr(stages[-1], "FROM")[0].startswith("${PYTHON_IMAGE}")


def test_wheels_are_built_in_the_builder_only() -> None:
    builder, runtime = _stages()[0], _stages()[-1]
    assert any("pip wheel" in run for run in _instr(builder, "RUN"))
    runtime_runs = " ".join(_instr(runtime, "RUN"))
    for compiler in ("build-essential", "gcc", "apt-get install", "pip wheel"):
        assert compiler not in runtime_runs
    assert any(copy.startswith("--from=builder /opt/syncd") for copy in _instr(runtime, "COPY"))


def test_runtime_runs_as_numeric_non_root_user() -> None:
    runtime = _stages()[-1]
    user = _instr(runtime, "USER")[-1]
    uid_arg = re.search(r"ARG SYNCD_UID=(\d+)", " ".join(runtime))
    assert uid_arg and int(uid_arg.group(1)) >= 10000
    assert user == "${SYNCD_UID}:${SYNCD_UID}"


def test_exec_form_entrypoint_and_env() -> None:
    runtime = _stages()[-1]
    assert json.loads(_instr(runtime, "ENTRYPOINT")[-1]) == ["syncd"]
    assert json.loads(_instr(runtime, "CMD")[-1]) == ["run", "-c", "/etc/syncd/config.yaml"]
    env = " ".join(_instr(runtime, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env  # read-only root filesystem: only /tmp (emptyDir) is writable


def test_image_smoke_checks_match_the_packaging_test() -> None:
    runs = " ".join(_instr(_stages()[-1], "RUN"))
    assert "syncd --version" in runs
    assert "syncd check-config -c /usr/share/syncd/example.yaml" in runs
