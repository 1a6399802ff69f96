"""The command-line verbs: each module registers its arguments and runs one command.

Commands stay thin: they parse, call the packages that do the work, and print. Loading the
config is shared (`load_config_or_exit`), so every command reports a bad config the same
way: every problem with file, line and suggestion, then `FILE: N problem(s)`, exit 2.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from syncd.config import ConfigError, SyncdConfig


class CommandExit(Exception):  # noqa: N818 - a signal to the command-line entry point
    """Stop the command with this exit code (its message is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def load_config_or_exit(path: str, command: str) -> SyncdConfig:
    """The config at `path`, or every problem printed and `CommandExit(2)`."""
    from syncd.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        config_failed(exc, path, command)


def config_failed(exc: ConfigError, path: str, command: str) -> NoReturn:
    print(f"syncd {command}: {exc}", file=sys.stderr)
    print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
    raise CommandExit(2)
