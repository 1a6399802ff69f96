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
_SECRET_KEY = re.compile(r"(password|secret|token|credential|private)", re.IGNORECASE)
_MASK = "**********"


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


def mask_properties(props: Mapping[str, object]) -> dict[str, object]:
    """Mask values whose key looks secret (librdkafka / Connect passthrough maps)."""
    return {k: (_MASK if _SECRET_KEY.search(k) else v) for k, v in props.items()}


__all__ = ["ENV_DELIMITER", "ENV_PREFIX", "StrictModel", "mask_properties", "read_secret_file"]
