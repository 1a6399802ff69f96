"""quick_init keeps a frozen dataclass's constructor contract while making it cheaper."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from syncd._speedups import quick_init
from syncd.changes import ChangeEvent, Op, RecordPosition


@quick_init
@dataclass(frozen=True, slots=True)
class Sample:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)
    d: int = field(default=4, kw_only=True)


def test_same_parameters_defaults_and_factories() -> None:
    one = Sample(1)
    assert (one.a, one.b, one.c, one.d) == (1, "b", [], 4)
    assert Sample(1).c is not Sample(1).c  # the factory runs per call
    assert Sample(a=2, b="x", c=[1], d=5) == Sample(2, "x", [1], d=5)
    assert list(inspect.signature(Sample).parameters) == ["a", "b", "c", "d"]
    with pytest.raises(TypeError):
        Sample(1, "x", [], 5)  # type: ignore[misc]  # d stays keyword-only
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_still_frozen_hashable_and_comparable() -> None:
    position = RecordPosition("t", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        position.offset = 3  # type: ignore[misc]
    assert position == RecordPosition("t", 1, 2)
    assert hash(position) == hash(RecordPosition("t", 1, 2))
    assert str(position) == "t[1]@2"
    event = ChangeEvent(position, Op.CREATE, "s.t", None, None, {"id": 1}, 5, False)
    assert event.source == {} and event.transaction_id is None
    assert dataclasses.replace(event, lsn=7).lsn == 7


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError, match="slots"):
        quick_init(NoSlots)

    @dataclass(frozen=True, slots=True)
    class NotInInit:
        a: int
        b: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="every field"):
        quick_init(NotInInit)


def test_post_init_runs_last_as_in_the_generated_init() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Positive:
        a: int
        b: int = 1

        def __post_init__(self) -> None:
            if self.a + self.b <= 0:
                raise ValueError("not positive")

    assert Positive(1).b == 1
    with pytest.raises(ValueError, match="not positive"):
        Positive(-1)
    with pytest.raises(ValueError, match="not positive"):
        Positive(1, b=-3)


def test_inherited_fields_are_stored_too() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Child(Base):
        b: int = 2

    child = Child(1)
    assert (child.a, child.b) == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        child.a = 5  # type: ignore[misc]
