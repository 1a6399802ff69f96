"""Command-line entry point.

Each sub-command lives in its own module under `syncd.commands` and exposes
`register(subparsers)` plus a `run(args) -> int`. Modules are imported lazily so
that a broken optional dependency of one command cannot break the others, and so
that `syncd --version` starts instantly inside a container probe.

Every command but `run` and `sandbox` (which log JSON lines for the log pipeline) logs
text lines to stderr, with librdkafka's lines hidden unless `syncd -v`: an operator
command answers an unreachable dependency with one line of its own and an exit code
(`syncd.commands.EXIT_*`, `docs/operations.md`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from syncd import __version__
from syncd.commands import EXIT_USAGE, CommandExit
from syncd.safetext import reason_of

#: Commands that set up their own logging (the daemon's JSON lines).
OWN_LOGGING = frozenset({"run", "sandbox"})

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
    "approve": "approve",
    "reject": "approve",
    "dlq": "dlq",
    "grants": "grants",
    "audit": "audit",
    "red-forms": "red_forms",
    "backfill": "backfill",
    "reconcile": "reconcile",
    "export": "export",
    "files": "files",
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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the libraries' log lines (librdkafka's connection attempts...) on stderr",
    )
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
        return EXIT_USAGE
    if args.command not in OWN_LOGGING:
        from syncd.observability.logs import configure_command_logging

        configure_command_logging(verbose=args.verbose)
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
        code, message = _unhandled(exc)
        print(f"syncd {args.command}: {message}", file=sys.stderr)
        return code


def _unhandled(exc: Exception) -> tuple[int, str]:
    """An exception no command caught: an unreachable dependency still gets its exit code
    (the libraries are only consulted if a command already imported them)."""
    from syncd.commands import EXIT_DATABASE, EXIT_KAFKA, database_reason, kafka_reason

    if "confluent_kafka" in sys.modules:
        from syncd.commands import is_kafka_unreachable

        if is_kafka_unreachable(exc):
            return EXIT_KAFKA, f"Kafka unreachable: {kafka_reason(exc)}"
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import DBAPIError

        from syncd.commands import is_connection_error

        if isinstance(exc, DBAPIError) and is_connection_error(exc):
            return EXIT_DATABASE, f"database unreachable: {database_reason(exc)}"
    return EXIT_USAGE, reason_of(exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
