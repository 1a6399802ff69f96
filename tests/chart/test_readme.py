"""The chart's README is generated from values.yaml's comments and is current; chart metadata."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import yaml

from tests.chart.conftest import CHART, ROOT

GENERATOR = ROOT / "dev" / "chart_readme.py"


def _generator() -> ModuleType:
    """dev/chart_readme.py as a module (dev/ is not a package)."""
    spec = importlib.util.spec_from_file_location("chart_readme", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60
    )


def test_readme_is_current() -> None:
    proc = _generate("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    chart = tmp_path / "syncd"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(
        values.read_text(encoding="utf-8").replace(
            "# -- Number of syncd pods.", "# -- How many syncd pods run."
        ),
        encoding="utf-8",
    )
    proc = _generate("--check", "--chart", str(chart))
    assert proc.returncode == 1
    assert "+| `replicaCount` | int | `1` | How many syncd pods run." in proc.stdout
    assert _generate("--chart", str(chart)).returncode == 0
    assert _generate("--check", "--chart", str(chart)).returncode == 0


def test_values_descriptions_are_parsed_helm_docs_style() -> None:
    chart_readme = _generator()
    text = (
        "# file header, not a description\n"
        "\n"
        "# -- First line\n"
        "# continued.\n"
        "top: 1\n"
        "group:\n"
        "  # -- Nested.\n"
        "  leaf: [a]\n"
        "  plain: x\n"
        "  # an ordinary comment\n"
        "  other: y\n"
        "items:\n"
        "  # -- Ports.\n"
        "  ports:\n"
        "    - port: 1\n"
        "      # -- inside a list item: not a value of its own\n"
        "      protocol: TCP\n"
    )
    assert chart_readme.descriptions(text) == {
        "top": "First line continued.",
        "group.leaf": "Nested.",
        "items.ports": "Ports.",
    }
    table = chart_readme.values_table(text)
    assert "| `top` | int | `1` | First line continued. |" in table
    assert '| `group.plain` | string | `"x"` |  |' in table
    assert '| `items.ports` | list | `[{"port":1,"protocol":"TCP"}]` | Ports. |' in table


def test_every_top_level_value_is_documented() -> None:
    chart_readme = _generator()
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented = chart_readme.descriptions(text)
    for key in yaml.safe_load(text):
        below = [path for path in documented if path == key or path.startswith(key + ".")]
        assert below, f"values.yaml: {key} has no `# --` description"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["home"].startswith("https://")
    assert chart["sources"] and all(s.startswith("https://") for s in chart["sources"])
    assert chart["icon"].startswith(("https://", "data:image/svg+xml;base64,"))
    assert "example." not in chart["home"] + " ".join(chart["sources"])  # no placeholder host
    ignored = (CHART / ".helmignore").read_text(encoding="utf-8").split()
    assert "README.md.gotmpl" in ignored  # the packaged chart carries the README only


def test_chart_pyproject_and_image_name_the_same_project_address() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
    assert chart["home"] == urls["Homepage"]
    assert chart["sources"][0] == urls["Source"]
    assert all(s.startswith(urls["Source"]) for s in chart["sources"])
    label = re.search(
        r'org\.opencontainers\.image\.source="([^"]+)"',
        (ROOT / "Dockerfile").read_text(encoding="utf-8"),
    )
    assert label and label.group(1) == urls["Source"]
