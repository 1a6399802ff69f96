"""Shared pieces of the config models: strict models, secrets from files, masking."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
)

ENV_PREFIX = "SYNCD_"
ENV_DELIMITER = "__"

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUALIFIED_TABLE = re.compile(rf"^{_IDENT}\.{_IDENT}$")
_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|credential|private|\.pem$|oauthbearer\.config|jaas)",
    re.IGNORECASE,
)
_MASK = "**********"
#: A PEM block (a key, a certificate, a keystore) pasted inline instead of a file path.
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
#: `clientSecret=...`, `password="..."`: credentials inside a composite value (librdkafka's
#: `sasl.oauthbearer.config`, a JAAS line, a connection string).
_CREDENTIAL = re.compile(
    r"(?:client[_.-]?secret|secret|password|passwd|pwd|token|api[_.-]?key|credentials?)"
    r"\s*[=:]\s*[\"']?(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE,
)
#: A Kafka Connect config-provider reference (`${file:/path:key}`, `${env:VAR}`,
#: `${secrets:ns/name:key}`): resolved by the Connect worker, never a secret itself.
#: Keys that name where a secret is, not the secret (`sasl.oauthbearer.token.endpoint.url`).
_NOT_SECRET_SUFFIXES = (".url", ".location", ".file", ".path")
_PLACEHOLDER = re.compile(r"^\$\{[A-Za-z0-9_.-]+:[^}]+\}$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def read_secret_file(path: Path) -> str:
    """Read a mounted secret; trailing newlines are an artefact of `echo > file`."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None


def _secret_from_file(
    value: SecretStr | None, file: Path | None, name: str, *, required: bool
) -> SecretStr | None:
    if value is not None and file is not None:
        raise ValueError(f"give either {name} or {name}_file, not both")
    if file is not None:
        return SecretStr(read_secret_file(file))
    if value is None and required:
        raise ValueError(f"{name} is required (or {name}_file pointing to a mounted secret)")
    return value


def is_placeholder(value: object) -> bool:
    """A config-provider reference (`${file:...}`, `${env:...}`), not a literal value."""
    return isinstance(value, str) and bool(_PLACEHOLDER.match(value.strip()))


def is_secret_property(key: str, value: object) -> bool:
    """Whether a passthrough property holds a secret: by its key (`ssl.key.password`,
    `sasl.oauthbearer.config`, `ssl.key.pem`) or by its value (an inline PEM block, a
    `clientSecret=...` credential), so a secret under an innocent key is caught too."""
    if value is None or value == "" or isinstance(value, bool | int | float):
        return False
    if is_placeholder(value):
        return False
    if _SECRET_KEY.search(key) and not key.endswith(_NOT_SECRET_SUFFIXES):
        return True
    text = str(value)
    return bool(_PEM.search(text) or _CREDENTIAL.search(text))


def property_secrets(key: str, value: object) -> list[str]:
    """The secret strings in one passthrough property (the value, and each credential
    inside a composite value, so a fragment quoted in an error is caught as well)."""
    if not is_secret_property(key, value):
        return []
    text = str(value)
    out = [text]
    out += [m["value"] for m in _CREDENTIAL.finditer(text)]
    if _PEM.search(text):  # every line of the key body: a fragment is still a leak
        lines = (line.strip() for line in text.splitlines())
        out += [line for line in lines if len(line) >= 16 and not line.startswith("-----")]
    return out


def mask_properties(props: Mapping[str, object]) -> dict[str, object]:
    """Mask secret values of a passthrough map (librdkafka properties, connector extra):
    by key name and by value (PEM blocks, embedded credentials)."""
    return {k: (_MASK if is_secret_property(k, v) else v) for k, v in props.items()}


__all__ = [
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "StrictModel",
    "is_placeholder",
    "is_secret_property",
    "mask_properties",
    "property_secrets",
    "read_secret_file",
]
