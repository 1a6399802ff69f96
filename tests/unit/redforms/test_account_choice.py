"""`syncd red-forms --account`: which platform account a decision goes to."""

from __future__ import annotations

from typing import Any, cast

import pytest

from syncd.commands.red_forms import AccountChoiceError, _account
from syncd.config import SyncdConfig
from syncd.errors import OperatorError


class _Config:
    def __init__(self, *names: str) -> None:
        self._names = names

    def accounts(self) -> dict[str, Any]:
        return dict.fromkeys(self._names)


def _choose(names: tuple[str, ...], account: str | None) -> str:
    return _account(cast(SyncdConfig, _Config(*names)), account)


def test_the_only_account_needs_no_flag() -> None:
    assert _choose(("default",), None) == "default"


def test_a_named_account_is_taken() -> None:
    assert _choose(("sh", "bj"), "bj") == "bj"


def test_several_accounts_need_the_flag() -> None:
    with pytest.raises(AccountChoiceError, match=r"several issuer accounts \(sh, bj\)"):
        _choose(("sh", "bj"), None)


def test_an_unknown_account_is_refused_by_name() -> None:
    with pytest.raises(AccountChoiceError, match="--account gz: no such issuer account"):
        _choose(("sh", "bj"), "gz")
    assert issubclass(AccountChoiceError, OperatorError)
