"""The commands' tests call `syncd.cli.main`, which sets up logging for the command (a
stderr handler, quiet library loggers): give every other test its logging back."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from syncd.observability.logs import ROUTED_LOGGERS


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """`main` configures logging for the command: give the other tests theirs back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = list(ROUTED_LOGGERS)
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
