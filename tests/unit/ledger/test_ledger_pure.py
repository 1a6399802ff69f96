"""The ledger's pure parts: identity, canonical JSON, validation, migration metadata."""

import importlib.util
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.identity import DocumentKind, KeyValue
from syncd.ledger.engine import InvalidSchemaNameError, check_schema_name, normalise_url
from syncd.ledger.migrate import MIGRATIONS_DIR, head_revision, lock_key
from syncd.ledger.models import DocumentIdentity, canonical_json, payload_hash
from syncd.ledger.repository import NewDocument
from syncd.ledger.schema import KIND_VALUES, STATE_VALUES, documents
from syncd.lifecycle import DocumentState, InvalidTransitionError


def load_revision(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, MIGRATIONS_DIR / "versions" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migrations_know_every_state_and_kind() -> None:
    """Adding a state to syncd.lifecycle needs a migration widening the CHECK constraint."""
    first = load_revision("0001_ledger")
    approval = load_revision("0003_roles_approval")
    assert set(approval.STATES_BEFORE) == set(first.STATES)
    migrated = set(first.STATES) | set(approval.NEW_STATES)
    assert migrated == set(STATE_VALUES) == {s.value for s in DocumentState}
    assert set(first.KINDS) == set(KIND_VALUES)
    assert head_revision() == "0009_files"


def test_identity_key_is_canonical() -> None:
    key_a: dict[str, KeyValue] = {"b": 2, "a": Decimal("1.50")}
    key_b: dict[str, KeyValue] = {"a": Decimal("1.50"), "b": 2}
    a = DocumentIdentity.of("invoice", "public.sales_order", key_a)
    b = DocumentIdentity.of("invoice", "public.sales_order", key_b)
    assert a == b and a.source_key == '{"a":"1.50","b":2}'
    assert str(a) == 'invoice:public.sales_order{"a":"1.50","b":2}/issue/r0'
    rev = a.for_reversal()
    assert rev.kind is DocumentKind.REVERSAL and rev.source_key == a.source_key


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_payload_hash_ignores_key_order(payload: dict[str, object]) -> None:
    reordered = dict(reversed(list(payload.items())))
    assert canonical_json(payload) == canonical_json(reordered)
    assert payload_hash(payload) == payload_hash(reordered)


def test_canonical_json_types() -> None:
    assert canonical_json({"d": date(2026, 1, 2), "u": "é"}) == '{"d":"2026-01-02","u":"é"}'
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_new_document_validation() -> None:
    i = DocumentIdentity.of("invoice", "t", {"id": 1})
    assert NewDocument(i, "S1").initial_state() is DocumentState.PENDING
    with pytest.raises(InvalidTransitionError):
        NewDocument(i, "S1", DocumentState.ISSUED).initial_state()
    with pytest.raises(ValueError, match="frozen payload"):
        NewDocument(i, "S1", DocumentState.READY).values(lease_owner=None, lease_epoch=None)
    with pytest.raises(ValueError, match="reverses_id"):
        NewDocument(i.for_reversal(), "S2", payload={"x": 1}).values(
            lease_owner=None, lease_epoch=None
        )
    v = NewDocument(i, "S1", DocumentState.READY, payload={"x": 1}).values(
        lease_owner="r1", lease_epoch=3
    )
    assert v["payload_hash"] == payload_hash({"x": 1}) and v["lease_epoch"] == 3
    assert set(v) <= {c.name for c in documents.columns}


@pytest.mark.parametrize("name", ["syncd", "ledger_2", "_x"])
def test_schema_names_ok(name: str) -> None:
    assert check_schema_name(name) == name


@pytest.mark.parametrize("name", ["", "Syncd", "a-b", 'x"; drop', "1abc", "a" * 64])
def test_schema_names_rejected(name: str) -> None:
    with pytest.raises(InvalidSchemaNameError):
        check_schema_name(name)


def test_url_driver_defaults_to_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_lock_key_is_stable_signed_64_bit() -> None:
    k = lock_key("syncd")
    assert k == lock_key("syncd") != lock_key("other")
    assert -(2**63) <= k < 2**63


def test_migrations_are_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert MIGRATIONS_DIR.parent.name == "ledger" and MIGRATIONS_DIR.parent.parent.name == "syncd"
