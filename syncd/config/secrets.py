"""The registry of secret values: every secret string the config holds, in one place.

Masking by key name alone misses secrets under innocent names (a PEM pasted into
`kafka.properties`, `clientSecret=` inside `sasl.oauthbearer.config`, a password in a DSN
query parameter or in the userinfo of a URL). `SyncdConfig.secret_values()` collects them
all -- issuer secret, database password and secret DSN parameters, SASL and key passwords,
secret passthrough properties, URL userinfo (the issuer's base URL, `issuer.proxy` and the
`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` variables the issuer may use) -- and every printer
uses it:

* the daemon registers each value for log redaction at start (`syncd run`);
* `SyncdConfig.masked_dump()` (what `check-config` prints) scrubs them from every string;
* commands quoting a DSN or a connection error pass the text through `redact`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

#: What a scrubbed secret becomes (the log redaction's mask).
SCRUBBED: Final = "***"
#: Shorter values are not scrubbed from text: masking them would mangle ordinary words
#: (the log redaction's own threshold).
MIN_SECRET_LENGTH: Final = 4


def normalise(values: Iterable[str | None]) -> tuple[str, ...]:
    """Distinct values worth scrubbing, longest first (a secret containing another is
    masked whole)."""
    kept = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=lambda v: (-len(v), v)))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***`."""
    for value in secrets:
        if value in text:
            text = text.replace(value, SCRUBBED)
    return text


def scrub(data: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON-like structure with every secret value scrubbed from its strings."""
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, Mapping):
        return {k: scrub(v, secrets) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [scrub(v, secrets) for v in data]
    return data


__all__ = ["MIN_SECRET_LENGTH", "SCRUBBED", "normalise", "redact", "scrub"]
