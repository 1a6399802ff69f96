"""The container image's build steps, without a container engine.

The Dockerfile installs the locked dependencies (requirements/runtime.txt, hash-checked)
into a fresh virtualenv, then syncd's wheel without dependencies, and smoke-checks
`syncd --version` and `syncd check-config` on the example config. This test does the same on
the host, so a broken package (missing module, bad entry point, undeclared dependency) fails
here instead of in an image build. Dependencies come from pip's cache or the package index,
exactly the files the lock names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from syncd import __version__

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "config" / "example.yaml"
LOCK = ROOT / "requirements" / "runtime.txt"


def _run(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv with syncd installed from a freshly built wheel."""
    work = tmp_path_factory.mktemp("packaging")
    wheels = work / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)])
    built = sorted(wheels.glob("syncd-*.whl"))
    assert [w.name for w in built] == [f"syncd-{__version__}-py3-none-any.whl"]

    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check"]
    # As the Dockerfile: the locked dependencies, hash-checked, then syncd without deps;
    # `pip check` fails if the lock lacks something the wheel requires.
    _run([*pip, "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(LOCK)])
    _run([*pip, "install", "--quiet", "--no-index", "--no-deps", str(built[0])])
    _run([*pip, "check"])
    return bin_dir


def _clean_env(bin_dir: Path) -> dict[str, str]:
    """Like the image: the venv first on PATH, no bytecode writes, nothing from this checkout."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SYNCD_"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_wheel_contains_no_tests_or_dev_files(installed: Path) -> None:
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    assert (site / "syncd" / "cli.py").is_file()
    assert not (site / "tests").exists()


def test_installed_entry_point_reports_version(installed: Path, tmp_path: Path) -> None:
    proc = _run([str(installed / "syncd"), "--version"], env=_clean_env(installed), cwd=tmp_path)
    assert proc.stdout.strip() == f"syncd {__version__}"


def test_installed_check_config_accepts_the_example(installed: Path, tmp_path: Path) -> None:
    assert EXAMPLE_CONFIG.is_file(), "config/example.yaml is missing (the image ships it)"
    # The example reads its secrets from mounted files, as in Kubernetes: mount stand-ins
    # (through environment overrides of the *_file keys) like the chart's secret volume does.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    files = {
        "SYNCD_KAFKA__SASL_PASSWORD_FILE": ("kafka-sasl-password", "kafka-pw"),
        "SYNCD_DATABASE__DSN_FILE": (
            "database-dsn",
            "postgresql+psycopg://syncd:db-pw@erp-db:5432/erp",
        ),
        # the example's two companies (issuers sh and bj) share one Nuonuo app
        "SYNCD_ISSUERS__SH__APP_SECRET_FILE": ("issuer-app-secret", "issuer-secret"),
        "SYNCD_ISSUERS__BJ__APP_SECRET_FILE": ("issuer-app-secret", "issuer-secret"),
    }
    env = _clean_env(installed)
    for var, (name, value) in files.items():
        (secrets / name).write_text(value + "\n")
        env[var] = str(secrets / name)
    proc = _run(
        [str(installed / "syncd"), "check-config", "-c", str(EXAMPLE_CONFIG)], env=env, cwd=tmp_path
    )
    for secret in ("kafka-pw", "db-pw", "issuer-secret"):
        assert secret not in proc.stdout + proc.stderr, "a secret was printed"
    assert proc.stdout.strip(), "check-config printed nothing"


def test_installed_wheel_carries_no_sandbox_server_stack(installed: Path) -> None:
    """`pip install syncd` (the production image) brings no starlette/uvicorn/uvloop."""
    proc = _run([str(installed / "python"), "-m", "pip", "list", "--format=freeze"])
    names = {line.split("==")[0].lower() for line in proc.stdout.splitlines()}
    assert not names & {"starlette", "uvicorn", "uvloop"}, names


def test_installed_sandbox_command_says_how_to_get_the_extra(
    installed: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(installed / "syncd"), "sandbox", "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(installed),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "pip install 'syncd[sandbox]'" in proc.stderr
    assert "Traceback" not in proc.stderr
