"""`syncd run` sizes the provider's HTTP pool to its callers -- the worker pool, and on the
event loop the documents in flight -- unless told otherwise."""

from __future__ import annotations

import yaml

from syncd.commands.run import issuer_settings
from syncd.config import parse_config
from tests.integration.stack import REPO_DIR


def _config(
    issuer: dict[str, object] | None = None, *, calls: str = "threads", in_flight: int = 32
) -> object:
    data = yaml.safe_load((REPO_DIR / "config" / "demo.yaml").read_text())
    data["issuer"].update(issuer or {})
    data["pipeline"].update(provider_calls=calls, max_in_flight=in_flight)
    return parse_config(yaml.safe_dump(data))


def test_http_pool_follows_the_workers_by_default() -> None:
    settings = issuer_settings(_config(), workers=64)
    assert settings["max_connections"] == 64
    assert settings["max_keepalive_connections"] == 64


def test_on_the_event_loop_the_pool_follows_the_documents_in_flight() -> None:
    """Every document in flight may wait on one call: the pool must not queue them."""
    settings = issuer_settings(_config(calls="event_loop", in_flight=1024), workers=64)
    assert (settings["max_connections"], settings["max_keepalive_connections"]) == (1024, 1024)
    settings = issuer_settings(_config(calls="event_loop", in_flight=16), workers=64)
    assert settings["max_connections"] == 64  # never fewer than the workers


def test_explicit_pool_settings_are_kept() -> None:
    settings = issuer_settings(
        _config({"max_connections": 8, "max_keepalive_connections": 4}), workers=64
    )
    assert (settings["max_connections"], settings["max_keepalive_connections"]) == (8, 4)


def test_a_larger_default_is_not_shrunk() -> None:
    settings = issuer_settings(_config(), workers=4)
    assert (settings["max_connections"], settings["max_keepalive_connections"]) == (20, 10)
