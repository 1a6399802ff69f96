"""`syncd run` sizes the provider's HTTP pool to the worker pool (unless told otherwise)."""

from __future__ import annotations

import yaml

from syncd.commands.run import issuer_settings
from syncd.config import parse_config
from tests.integration.stack import REPO_DIR


def _config(issuer: dict[str, object] | None = None) -> object:
    data = yaml.safe_load((REPO_DIR / "config" / "demo.yaml").read_text())
    data["issuer"].update(issuer or {})
    return parse_config(yaml.safe_dump(data))


def test_http_pool_follows_the_workers_by_default() -> None:
    settings = issuer_settings(_config(), workers=64)
    assert settings["max_connections"] == 64
    assert settings["max_keepalive_connections"] == 64


def test_explicit_pool_settings_are_kept() -> None:
    settings = issuer_settings(
        _config({"max_connections": 8, "max_keepalive_connections": 4}), workers=64
    )
    assert (settings["max_connections"], settings["max_keepalive_connections"]) == (8, 4)


def test_a_larger_default_is_not_shrunk() -> None:
    settings = issuer_settings(_config(), workers=4)
    assert (settings["max_connections"], settings["max_keepalive_connections"]) == (20, 10)
