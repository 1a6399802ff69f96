"""Rendering the Helm chart with the pinned helm binary built by dev/tools.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "syncd"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The smallest install that renders: the chart's defaults plus credentials and the DBAs'
#: document config (the chart refuses to render a config without `seller`/`documents`).
DEFAULT_VALUES = (CHART / "ci" / "default-values.yaml",)
#: Manifests are rendered for an older supported Kubernetes and validated against it and the
#: newest version kubernetes-validate ships schemas for.
KUBE_VERSION = "1.30.0"
VALIDATE_VERSIONS = ("1.30.0", "1.37.0")
RELEASE = "syncd"
#: Release names the release-dependent tests run under: the chart's own name (full name
#: "syncd") and one without it (full name "einvoice-syncd"), where job, Service and release
#: names all differ.
RELEASES = ("syncd", "einvoice")
NAMESPACE = "erp-sync"


def tools_bin() -> Path:
    base = os.environ.get("SYNCD_TOOLS_DIR") or str(Path.home() / ".cache" / "syncd-tools")
    return Path(base) / "bin"


def tool(name: str) -> Path:
    """Path of a pinned tool; a clear failure (not a skip) when it was never built."""
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} not found at {path}: build the pinned tools first with `bash dev/tools.sh` "
            "(or `make chart-test`, which does it)",
            pytrace=False,
        )
    return path


def kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate") or str(
        Path(sys.executable).parent / "kubernetes-validate"
    )
    if not os.access(found, os.X_OK):
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[dev]'", pytrace=False)
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/syncd-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/syncd-helm/config",
        "HELM_DATA_HOME": "/tmp/syncd-helm/data",
    }
    proc = subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}", pytrace=False
        )
    return proc


def value_args(values_files: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def template_args(
    values_files: Sequence[Path] = (), sets: Sequence[str] = (), release: str = RELEASE
) -> list[str]:
    return [
        "template",
        release,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *value_args(values_files, sets),
    ]


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render() -> Render:
    """render(values_files=(), sets=(), release=RELEASE) -> the rendered manifests as dicts
    (hooks included)."""
    cache: dict[tuple[tuple[Path, ...], tuple[str, ...], str], list[dict[str, Any]]] = {}

    def _render(
        values_files: Sequence[Path] = (), sets: Sequence[str] = (), release: str = RELEASE
    ) -> list[dict[str, Any]]:
        key = (tuple(values_files), tuple(sets), release)
        if key not in cache:
            out = helm(*template_args(values_files, sets, release)).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[key]

    return _render


def find(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def scraped_job(docs: Sequence[dict[str, Any]]) -> str:
    """The `job` label Prometheus gives syncd's series when the rendered ServiceMonitor
    scrapes it, by prometheus-operator's rule: the value of the Service label named by
    `jobLabel`, or the Service's name when `jobLabel` is unset (or the label is missing)."""
    monitor = find(docs, "ServiceMonitor")
    service = find(docs, "Service")
    job_label = monitor["spec"].get("jobLabel")
    labels = service["metadata"].get("labels", {})
    if job_label and job_label in labels:
        return str(labels[job_label])
    return str(service["metadata"]["name"])


def kinds(docs: Sequence[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}
