"""Client-side request signing (the scheme is specified in docs/sandbox.md).

    string_to_sign = METHOD "\\n" PATH "\\n" X-Timestamp "\\n" X-Nonce "\\n" hex(sha256(body))
    X-Signature    = base64(HMAC-SHA256(app_secret, string_to_sign))

PATH is the request target exactly as sent: the raw (percent-encoded) path,
plus `?query` when there is one. A fresh timestamp and nonce are made for
every attempt, so a retried request is never a replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from pydantic import SecretStr


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])


def signature(
    secret: SecretStr, method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> str:
    message = string_to_sign(method, path, timestamp, nonce, body).encode()
    mac = hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def new_nonce() -> str:
    """32 random hex characters (the platform wants at least 16)."""
    return secrets.token_hex(16)


def auth_headers(
    app_key: str,
    secret: SecretStr,
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    nonce = new_nonce() if nonce is None else nonce
    return {
        "X-App-Key": app_key,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
        "X-Signature": signature(secret, method, path, timestamp, nonce, body),
    }
