"""The Dockerfile keeps the properties the Helm chart's security defaults rely on."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- reproducibility

LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"


def _locked(path: Path) -> dict[str, list[str]]:
    """Package (normalised name) -> its recorded hashes, from a pip-compile lock."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        assert match, f"{path.name}: not an exact pin: {line[:80]}"
        out[_norm(match.group(1))] = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        if "sys_platform == 'win32'" in req.replace('"', "'"):
            continue
        match = re.match(r"^\s*([A-Za-z0-9._-]+)", req)
        assert match, req
        names.add(_norm(match.group(1)))
    return names


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_base_image_is_pinned_by_digest_with_its_tag() -> None:
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert arg, "the base image is a build argument"
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", arg.group(1))
    for stage in _stages():
        assert _instr(stage, "FROM")[0].startswith("${PYTHON_IMAGE}")


def test_dependencies_come_from_the_lock_with_hashes_then_syncd_without_deps() -> None:
    builder = _stages()[0]
    runs = _instr(builder, "RUN")
    copies = " ".join(_instr(builder, "COPY"))
    assert "requirements/runtime.txt" in copies
    lock_install = [r for r in runs if "-r requirements/runtime.txt" in r]
    assert lock_install and "--require-hashes" in lock_install[0]
    own = [r for r in runs if "syncd-*.whl" in r]
    assert own and "--no-deps" in own[0] and "--no-index" in own[0]
    assert any("pip wheel --no-deps" in r for r in runs)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert "!requirements/runtime.txt" in ignored.splitlines()


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    locked = _locked(LOCK)
    declared = _requirement_names(_pyproject()["project"]["dependencies"])
    missing = declared - set(locked)
    assert not missing, f"requirements/runtime.txt lacks {sorted(missing)}: run `make lock`"
    unhashed = [name for name, hashes in locked.items() if not hashes]
    assert not unhashed, f"no hashes for {unhashed}"
    sandbox = _requirement_names(_pyproject()["project"]["optional-dependencies"]["sandbox"])
    assert not sandbox & set(locked), "the image lock must not carry the sandbox's server"


def test_the_dev_lock_pins_runtime_sandbox_and_dev_dependencies() -> None:
    locked = _locked(DEV_LOCK)
    extras = _pyproject()["project"]["optional-dependencies"]
    declared = _requirement_names(
        _pyproject()["project"]["dependencies"]
        + extras["sandbox"]
        + [r for r in extras["dev"] if not r.startswith("syncd")]
    )
    missing = declared - set(locked)
    assert not missing, f"requirements/dev.txt lacks {sorted(missing)}: run `make lock`"
    assert all(locked.values()), "every pin carries its hashes"
    runtime = _locked(LOCK)
    differ = {n: v for n, v in runtime.items() if n in locked and set(v) - set(locked[n])}
    assert not differ, f"the two locks pin different files of {sorted(differ)}: run `make lock`"


def test_pyproject_keeps_ranges_the_locks_pin() -> None:
    """A library user installs syncd next to other packages: pyproject says what syncd
    works with (lower bounds, ranges), only the locks pin exact versions."""
    project = _pyproject()["project"]
    declared = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    pinned = [r for r in declared if re.search(r"===?\s*[0-9]", r.split(";")[0])]
    assert not pinned, f"pyproject.toml pins exact versions: {pinned}"
