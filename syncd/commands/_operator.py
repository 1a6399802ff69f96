"""Who runs an operator command and why: `--reason` and the audit row's who-fields."""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.ledger.models import Operator


def add_reason_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--reason",
        required=required,
        metavar="TEXT",
        help="why you are doing this; recorded in the audit trail with your OS user",
    )


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def actor() -> str:
    """`operator:<OS user>@<host>`: the audit row's actor for a command run by a person."""
    return f"operator:{os_user()}@{socket.gethostname()}"


def operator_from(args: argparse.Namespace) -> Operator:
    """The person behind this command; `ValueError` for an empty `--reason`."""
    from syncd.ledger.models import Operator

    return Operator(os_user=os_user(), why=str(args.reason or "").strip())


__all__ = ["actor", "add_reason_argument", "operator_from", "os_user"]
