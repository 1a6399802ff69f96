"""Providers by name: the config says `provider: sandbox`, this finds the module.

Modules are imported lazily (like the CLI's commands) so one provider's optional
dependency cannot break the others. Adding a provider is one module plus one
line here (docs/issuers.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from pydantic import BaseModel

from syncd.errors import SyncdError
from syncd.issuers.base import Issuer


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    module: str
    settings_class: str
    issuer_class: str


PROVIDERS: Final[Mapping[str, ProviderSpec]] = {
    "sandbox": ProviderSpec("syncd.issuers.sandbox", "SandboxIssuerSettings", "SandboxIssuer"),
    "nuonuo": ProviderSpec("syncd.issuers.nuonuo", "NuonuoIssuerSettings", "NuonuoIssuer"),
}


class UnknownProviderError(SyncdError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown issuer provider {name!r}; known: {', '.join(sorted(PROVIDERS))}")
        self.name = name


def _spec(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProviderError(name) from None


def settings_model(name: str) -> type[BaseModel]:
    """The pydantic model of a provider's settings (for config validation)."""
    spec = _spec(name)
    return cast(type[BaseModel], getattr(importlib.import_module(spec.module), spec.settings_class))


def create_issuer(
    name: str, settings: BaseModel | Mapping[str, Any], **dependencies: Any
) -> Issuer:
    """A ready client for provider `name`; `settings` may be raw config data.
    `dependencies` go to the client as keywords (e.g. Nuonuo's shared `token_store`)."""
    spec = _spec(name)
    module = importlib.import_module(spec.module)
    model = cast(type[BaseModel], getattr(module, spec.settings_class))
    parsed = (
        settings
        if isinstance(settings, model)
        else model.model_validate(
            settings.model_dump() if isinstance(settings, BaseModel) else dict(settings)
        )
    )
    return cast(Issuer, getattr(module, spec.issuer_class)(parsed, **dependencies))
