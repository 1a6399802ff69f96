"""The command-line verbs: each module registers its arguments and runs one command.

Commands stay thin: they parse, call the packages that do the work, and print. Loading the
config is shared (`load_config_or_exit`), so every command reports a bad config the same
way: every problem with file, line and suggestion, then `FILE: N problem(s)`, exit 2.

Exit codes are shared too (`docs/operations.md`, "Exit codes"): a script can tell "the
answer is no" from "you asked wrongly" from "a dependency is down", and which one. An
unreachable dependency is answered with one line naming it (`unreachable`), never with a
library's log lines or a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

if TYPE_CHECKING:
    from syncd.config import ConfigError, SyncdConfig

#: Done; the answer is yes (healthy, at head, retried, replayed).
EXIT_OK: Final = 0
#: The command ran and the answer is no: not at head, not retryable (or moved meanwhile).
EXIT_NO: Final = 1
#: Usage or config error: bad flags, a bad config, a malformed document reference.
EXIT_USAGE: Final = 2
#: What was asked for does not exist (`retry`: no ledger document matches).
EXIT_NOT_FOUND: Final = 3
#: The database (ERP and ledger) cannot be reached.
EXIT_DATABASE: Final = 4
#: The Kafka brokers cannot be reached.
EXIT_KAFKA: Final = 5
#: Neither the database nor Kafka can be reached.
EXIT_DATABASE_AND_KAFKA: Final = 6
#: A dependency was reached but answered with an error: a statement refused (permission
#: denied, the ledger schema not migrated), a Kafka error other than "unreachable".
EXIT_FAILED: Final = 7
#: The e-invoice platform could not be reached or did not take the call (`red-forms`).
EXIT_PLATFORM: Final = 8

DATABASE: Final = "database"
KAFKA: Final = "kafka"


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


def unreachable_exit(dependencies: Iterable[str]) -> int:
    """The exit code for these unreachable dependencies (0 when there are none)."""
    down = set(dependencies)
    if {DATABASE, KAFKA} <= down:
        return EXIT_DATABASE_AND_KAFKA
    if DATABASE in down:
        return EXIT_DATABASE
    if KAFKA in down:
        return EXIT_KAFKA
    return EXIT_OK


def database_unreachable(config: SyncdConfig, exc: BaseException) -> str:
    """`database <masked DSN> unreachable: <first line of the driver's reason>`."""
    return f"database {config.database.masked_dsn()} unreachable: {database_reason(exc)}"


def kafka_unreachable(config: SyncdConfig, exc: BaseException, cause: str | None = None) -> str:
    """`Kafka <bootstrap servers> unreachable: <librdkafka's reason>`, and the failed
    connection's own reason when the client reported one (`kafka.client.BrokerErrors`)."""
    line = f"Kafka {config.kafka.bootstrap_servers} unreachable: {kafka_reason(exc)}"
    return f"{line} ({cause})" if cause else line


def database_reason(exc: BaseException) -> str:
    from syncd.observability.logs import redact_text

    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    first = text.splitlines()[0].strip() if text else type(orig).__name__
    return redact_text(first)


def kafka_reason(exc: BaseException) -> str:
    error: Any = exc.args[0] if exc.args else None
    text = str(error.str() if hasattr(error, "str") else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_connection_error(exc: BaseException) -> bool:
    """A database error that means "cannot talk to the server" (refused, unknown host,
    timed out, authentication), as opposed to a statement the server refused."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


#: librdkafka error codes that mean "cannot talk to the brokers" (not "the brokers said no").
_KAFKA_UNREACHABLE: Final = (
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_RESOLVE",
    "_AUTHENTICATION",
    "_SSL",
    "_WAIT_COORD",
    "_TIMED_OUT_QUEUE",
)


def is_kafka_unreachable(exc: BaseException) -> bool:
    """A `KafkaException` that means the brokers could not be reached in time."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException):
        return False
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return False
    codes = {getattr(KafkaError, name, None) for name in _KAFKA_UNREACHABLE}
    return error.code() in codes


def say(command: str, message: str) -> None:
    """One line on stderr: `syncd <command>: <message>`."""
    print(f"syncd {command}: {message}", file=sys.stderr)


def fail(
    command: str,
    code: int,
    message: str,
    *,
    as_json: bool = False,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Say why the command failed (one line on stderr; with `--json` also an object on
    stdout: `{"ok": false, "exit_code": N, "error": "...", ...}`) and return `code`."""
    say(command, message)
    if as_json:
        emit_json({"ok": False, "exit_code": code, "error": message, **(details or {})})
    return code


def emit_json(data: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
