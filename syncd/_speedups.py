"""A cheaper constructor for the frozen, slotted dataclasses built once per Kafka record.

Every interpreter-specific speed trick of syncd lives here, in a leaf module, so the
exactly-once core reads as plain Python. The measurements that justify each are in
docs/performance.md and the commit that introduced it.

A frozen dataclass's generated `__init__` (Python 3.11) assigns each field with
`object.__setattr__` looked up afresh per field. The hot path builds several such records
per change event (position, event, decision, condition outcomes, classification).
`quick_init` replaces that `__init__` with one with the same signature that stores each
field through its slot descriptor; the class stays frozen (assignment still raises
`FrozenInstanceError`), hashable and comparable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

T = TypeVar("T")

_NO_DEFAULT = dataclasses.MISSING


class _Factory:
    """Sentinel default of a field with a default factory (the factory runs per call)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory default>"


_FACTORY = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass a faster `__init__` (same parameters and defaults).

    Only plain fields are supported (no `InitVar`, no `init=False` field), which is
    what the per-record types are; anything else is a programming error caught at
    import time. A `__post_init__` is called last, as the generated `__init__` does.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init wants a frozen dataclass with slots")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for index, f in enumerate(dataclasses.fields(cast(Any, cls))):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init needs every field in __init__")
        name = f.name
        setter = f"_set_{index}"
        # the slot's member descriptor (a field inherited from a dataclass base has it there)
        slot = next(k.__dict__[name] for k in cls.__mro__ if name in k.__dict__)
        namespace[setter] = slot.__set__
        param = f"{name}"
        if f.default is not _NO_DEFAULT:
            namespace[f"_default_{index}"] = f.default
            param += f"=_default_{index}"
        elif f.default_factory is not _NO_DEFAULT:
            namespace[f"_factory_{index}"] = f.default_factory
            param += "=_FACTORY"
            body.append(f"    if {name} is _FACTORY: {name} = _factory_{index}()")
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    {setter}(self, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")  # (its checks, as the generated __init__)
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}):\n" + ("\n".join(body) or "    pass") + "\n"
    # what dataclasses itself does: code built from the class's own field names, never data
    exec(source, namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
