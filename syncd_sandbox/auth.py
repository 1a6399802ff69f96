"""The platform side of request signing.

Written independently of `syncd.issuers.signing` (the client side) so that a
mistake in one is caught by the other; both follow docs/sandbox.md exactly:

    string_to_sign = METHOD "\\n" PATH "\\n" X-Timestamp "\\n" X-Nonce "\\n" hex(sha256(body))
    X-Signature    = base64(HMAC-SHA256(app_secret, string_to_sign))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

MAX_SKEW_SECONDS: Final = 300
NONCE_TTL_SECONDS: Final = 600
MIN_NONCE_LENGTH: Final = 16
MAX_NONCE_LENGTH: Final = 128


@dataclass(frozen=True, slots=True)
class AuthFailure:
    code: str
    message: str


def expected_signature(
    secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes
) -> str:
    message = "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])
    # hmac.digest: the one-shot C HMAC, the bytes of hmac.new(...).digest() without building a
    # Python HMAC object per request (given the constructor: a digest *name* makes OpenSSL 3
    # look the algorithm up on every call, which costs more than it saves).
    digest = hmac.digest(secret.encode(), message.encode(), hashlib.sha256)
    return base64.b64encode(digest).decode("ascii")


def check_request(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    credentials: Mapping[str, str],
    now: float,
) -> tuple[str, str] | AuthFailure:
    """(app_key, nonce) of a correctly signed request, or why it is refused.

    The nonce is only *checked* for shape here; remembering it (and refusing a
    replay) is the store's job, done after the signature proved the caller.
    """
    key = headers.get("x-app-key")
    timestamp = headers.get("x-timestamp")
    nonce = headers.get("x-nonce")
    signature = headers.get("x-signature")
    if not key or not timestamp or not nonce or not signature:
        return AuthFailure(
            "MISSING_AUTH_HEADERS", "X-App-Key, X-Timestamp, X-Nonce and X-Signature are required"
        )
    secret = credentials.get(key)
    if secret is None:
        return AuthFailure("UNKNOWN_APP_KEY", "the app key is not known to the platform")
    # ASCII digits only ("²" is a digit to str.isdigit) and a sane length (int() of a
    # 5000-digit string raises): a malformed header is a 401, never a crash.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return AuthFailure("INVALID_TIMESTAMP", "X-Timestamp is unix seconds")
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return AuthFailure("TIMESTAMP_SKEW", f"X-Timestamp is more than {MAX_SKEW_SECONDS}s off")
    if not MIN_NONCE_LENGTH <= len(nonce) <= MAX_NONCE_LENGTH or not nonce.isprintable():
        return AuthFailure(
            "INVALID_NONCE", f"X-Nonce must be {MIN_NONCE_LENGTH}..{MAX_NONCE_LENGTH} characters"
        )
    want = expected_signature(secret, method, path, timestamp, nonce, body)
    if not hmac.compare_digest(want.encode(), signature.encode()):
        return AuthFailure("BAD_SIGNATURE", "X-Signature does not match the request")
    return key, nonce


def file_token(secret: str, serial: str) -> str:
    """Capability token in issued-document links, so a link works without signing."""
    return hmac.digest(secret.encode(), f"file:{serial}".encode(), hashlib.sha256).hex()[:32]
