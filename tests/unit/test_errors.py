"""Every error syncd raises on purpose belongs to the tree drawn in syncd/errors.py."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import syncd
from syncd.errors import SyncdError

#: exceptions used as signals inside one module, never raised to a caller
INTERNAL = {
    "syncd.debezium.convert.Invalid",  # becomes a DecodeError at the decoder's boundary
    "syncd.debezium.convert.ExactNumbersNeeded",  # asks the decoder to re-parse exactly
    "syncd.invoice.from_erp._MissingError",
    "syncd.commands.decode._InputError",
    "syncd.commands.preview._InputError",
    "syncd.commands.CommandExit",  # a signal to the entry point: the message is printed
}


def _syncd_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(syncd.__path__, "syncd."):
        if ".migrations." in info.name or info.name == "syncd.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_derives_from_the_tree():
    errors = _syncd_exceptions()
    assert len(errors) > 15
    strays = sorted(
        name
        for name, cls in errors.items()
        if name not in INTERNAL and not issubclass(cls, SyncdError)
    )
    assert not strays, f"outside the error tree of syncd/errors.py: {strays}"


def test_the_docstring_draws_every_family():
    import syncd.errors as tree

    assert tree.__doc__ is not None
    for name in tree.__all__:
        assert name in tree.__doc__
