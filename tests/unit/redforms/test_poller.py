"""The daemon's red-letter form poller: off when configured off or unsupported, and a
failing poll (a dependency down) never stops it."""

from __future__ import annotations

import threading
import time
from typing import Any

from syncd.pipeline.redforms import RedFormPoller, start_poller
from tests.unit.config_helpers import demo_config


class FlakyDesk:
    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def poll_once(self) -> None:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError("database down")
        self.done.set()


def test_a_failing_poll_is_retried_at_the_next_tick() -> None:
    desk = FlakyDesk()
    poller = RedFormPoller(desk, 0.01)  # type: ignore[arg-type]
    poller.start()
    try:
        assert desk.done.wait(10)
    finally:
        poller.stop()
    assert desk.calls >= 3
    calls = desk.calls
    time.sleep(0.05)
    assert desk.calls == calls  # stopped


class NoForms:
    provider = "other"


def test_no_poller_when_off_or_unsupported() -> None:
    config = demo_config()
    off = config.model_copy(
        update={"red_forms": config.red_forms.model_copy(update={"poll_interval_seconds": 0})}
    )
    engine: Any = object()
    assert start_poller(engine, NoForms(), config, None) is None
    assert start_poller(engine, NoForms(), off, None) is None
