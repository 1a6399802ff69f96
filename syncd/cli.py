"""Command-line entry point.

Each sub-command lives in its own module under `syncd.commands` and exposes
`register(subparsers)` plus a `run(args) -> int`. Modules are imported lazily so
that a broken optional dependency of one command cannot break the others, and so
that `syncd --version` starts instantly inside a container probe.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from syncd import __version__
from syncd.commands import CommandExit
from syncd.safetext import reason_of

# command name -> module under syncd.commands; the order is the order of `--help`.
COMMANDS: dict[str, str] = {
    "run": "run",
    "migrate": "migrate",
    "check-config": "check_config",
    "decode": "decode",
    "preview": "preview",
    "connectors": "connectors",
    "sandbox": "sandbox",
    "status": "status",
    "retry": "retry",
    "dlq": "dlq",
    "demo": "demo",
}


class CommandModule(Protocol):
    HELP: str

    def register(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> CommandModule | None:
    try:
        module = importlib.import_module(f"syncd.commands.{COMMANDS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"syncd.commands.{COMMANDS[name]}":
            return None  # command not built yet
        raise
    return cast(CommandModule, module)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module of the command actually requested (plus all for --help).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        if wanted is not None and wanted in COMMANDS and name != wanted:
            sub.add_parser(name)
            continue
        module = _load(name)
        if module is None:
            continue
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.register(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(cast(CommandModule, module).run(args))
    except CommandExit as stop:
        return stop.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A command that meets input or a failure it does not name itself still answers in
        # one line: a traceback is for developers (SYNCD_TRACEBACK=1), not for users.
        if os.environ.get("SYNCD_TRACEBACK"):
            raise
        print(f"syncd {args.command}: {reason_of(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
