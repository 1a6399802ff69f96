"""The layer rules of docs/architecture.md hold, and the linter that checks them bites.

`make lint` runs import-linter over the contracts in pyproject.toml. This test runs the
same check on the real tree, then on a copy with one deliberate violation per rule, and
expects each to be reported: a contract that cannot fail would check nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=tree,
        env=env,
        timeout=300,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("syncd", "syncd_sandbox"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("syncd/identity.py", "import syncd.pipeline.loop", "ground never imports"),
        ("syncd/ledger/models.py", "import syncd.rules.decide", "edges never import"),
        ("syncd_sandbox/rules.py", "import syncd.invoice.model", "never imports syncd"),
        ("syncd/pipeline/loop.py", "import syncd_sandbox.store", "only the sandbox command"),
        ("syncd/erp/lines.py", "import syncd.ledger.repository", "no import cycles"),
    ],
)
def test_a_deliberate_violation_is_reported(tmp_path: Path, module: str, line: str, contract: str):
    tree = _copy(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate layer violation\n")
    if contract == "no import cycles":  # close the cycle: ledger -> erp as well
        ledger = tree / "syncd/ledger/repository.py"
        ledger.write_text(ledger.read_text() + "\nimport syncd.erp.writeback\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert contract in " ".join(result.stdout.split())  # names wrap across lines
