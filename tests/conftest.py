"""Hypothesis runs derandomized: a property test explores the same examples on every run,
so its verdict never depends on chance (CI and a developer see the same result). Set
SYNCD_HYPOTHESIS_EXPLORE=1 to search new examples, e.g. before a release."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SYNCD_HYPOTHESIS_EXPLORE") else "deterministic")
