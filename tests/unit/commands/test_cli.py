import subprocess
import sys

from syncd import __version__
from syncd.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help_and_fails():
    assert main([]) == 2


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "syncd", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"syncd {__version__}"
