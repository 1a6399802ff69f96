"""Misbehaviour on demand: the settings behind `/_sandbox/faults` and the dice.

The first five fields are the documented control surface; the rest refine
*how* the sandbox misbehaves so a test can ask for one exact failure instead
of a random mix.
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(0, ge=0, le=600_000)
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    drop_response_after_commit_rate: float = Field(0.0, ge=0.0, le=1.0)
    rate_limit_rps: int | None = Field(None, ge=1)
    session_expired: bool = False
    # Refinements (not in the minimal contract; all default to "no extra fault").
    credit_exhausted: bool = False
    error_mode: Literal["mixed", "http_500", "reset", "hang"] = "mixed"
    drop_mode: Literal["reset", "hang"] = "reset"
    hang_ms: int = Field(30_000, ge=0, le=600_000)
    issue_failure_rate: float = Field(0.0, ge=0.0, le=1.0)
    # Share of submitted invoices refused for a reason only the platform knows (the buyer's
    # tax ID is not registered with the bureau): a 422 the client cannot foresee.
    rejection_rate: float = Field(0.0, ge=0.0, le=1.0)
    # Per company (nuonuo dialect): the same two account faults for these userTax numbers
    # only, so a test can take one of several accounts down and leave the others alone.
    session_expired_for: list[str] = Field(default_factory=list, max_length=100)
    credit_exhausted_for: list[str] = Field(default_factory=list, max_length=100)
    # Deterministic: the next N issue calls answer 500 (counted down from the moment the
    # faults are set), so a test can assert on a failure instead of hoping for one.
    fail_next_issue_calls: int = Field(0, ge=0, le=100_000)
    # The query horizon: the platform forgets request results. Queries by serial answer
    # "not found" for invoices accepted more than `forget_after_seconds` ago, and for the
    # next `forget_next_serials` accepted submissions (counted down from the moment the
    # faults are set); the invoice list still shows those invoices, without their serial.
    forget_after_seconds: float | None = Field(None, ge=0)
    forget_next_serials: int = Field(0, ge=0, le=100_000)
    # Deterministic slow downloads: an invoice file (pdf/xml/html) is sent in ten pieces
    # with this pause before each, so a test can interrupt a download half-way.
    file_delay_ms: int = Field(0, ge=0, le=60_000)


class ErrorKind(enum.Enum):
    HTTP_500 = "http_500"
    RESET = "reset"
    HANG = "hang"


class Dice:
    """Random decisions, seedable so a test or benchmark run can be replayed."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def hit(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self._rng.random() < rate)

    def error_kind(self, faults: Faults) -> ErrorKind:
        if faults.error_mode != "mixed":
            return ErrorKind(faults.error_mode)
        return self._rng.choice(list(ErrorKind))


@dataclass
class TokenBucket:
    """Per-app-key limiter: `rate` tokens a second, bursts up to `rate`."""

    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float | None = None) -> TokenBucket:
        return cls(rate, rate, time.monotonic() if now is None else now)

    def take(self, now: float | None = None) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
