import hashlib
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.identity import (
    SERIAL_LENGTH,
    DocumentIdentity,
    DocumentKind,
    _crockford,
    _crockford_prefix,
    canonical_identity,
    serial_for,
)
from syncd.invoice.from_erp import source_ref
from syncd.invoice.model import SourceRef

ORDER_42 = DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)])

# Pinned forever: changing any of these would give already-issued documents a
# new serial, i.e. a duplicate invoice on the next replay.
PINNED = [
    (ORDER_42, "SR0YV96QFH8X24PEG3X1ERR5KR"),
    (
        DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)], DocumentKind.REVERSAL),
        "SYTXR9ZXCJ5DC1SWTM7HDH1CXA",
    ),
    (
        DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)], revision=1),
        "SPJ4JJTRJETS3177Y2P9QDS9JQ",
    ),
    (
        DocumentIdentity.of(
            "sales_order",
            "erp.sales_order",
            [("company", "C01"), ("order_no", Decimal("2026000042"))],
        ),
        "SKPX566KAQY18SR495GTSFF62C",
    ),
    (DocumentIdentity.of("发票", "erp.销售单", [("单号", "甲-1")]), "SGGF4997QFS5QXDCFCV2Y8PMVZ"),
]


@pytest.mark.parametrize(("identity", "serial"), PINNED)
def test_pinned_serials_never_change(identity, serial):
    assert serial_for(identity) == serial


def test_pinned_encoding_and_independent_recomputation():
    assert canonical_identity(ORDER_42) == (
        b'["syncd.serial/v1","sales_order","erp.sales_order",[["id","42"]],"issue",0]'
    )
    digest = hashlib.sha256(canonical_identity(ORDER_42)).digest()
    bits = "".join(f"{byte:08b}" for byte in digest)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
    expected = "S" + "".join(alphabet[int(bits[i : i + 5], 2)] for i in range(0, 125, 5))
    assert serial_for(ORDER_42) == expected


def test_issue_reversal_and_revisions_are_distinct():
    serials = {
        serial_for(DocumentIdentity.of("sales_order", "erp.sales_order", [("id", 42)], kind, rev))
        for kind in DocumentKind
        for rev in range(5)
    }
    assert len(serials) == 10


def test_key_order_and_key_value_typing_do_not_matter():
    a = DocumentIdentity.of("so", "erp.so", [("company", "C01"), ("no", 7)])
    b = DocumentIdentity.of("so", "erp.so", [("no", Decimal("7.00")), ("company", "C01")])
    c = DocumentIdentity.of("so", "erp.so", [("no", "7"), ("company", "C01")])
    assert serial_for(a) == serial_for(b) == serial_for(c)


def test_table_and_document_type_matter():
    assert serial_for(ORDER_42) != serial_for(
        DocumentIdentity.of("sales_order", "erp.sales_order_v2", [("id", 42)])
    )
    assert serial_for(ORDER_42) != serial_for(
        DocumentIdentity.of("credit_memo", "erp.sales_order", [("id", 42)])
    )


def test_field_boundaries_cannot_be_shifted():
    # Naive concatenation would make these two identical.
    a = DocumentIdentity.of("ab", "c", [("id", 1)])
    b = DocumentIdentity.of("a", "bc", [("id", 1)])
    assert serial_for(a) != serial_for(b)


@pytest.mark.parametrize(
    ("key", "revision", "error"),
    [
        ((), 0, ValueError),
        ((("id", 1), ("id", 2)), 0, ValueError),
        ((("id", 1.5),), 0, TypeError),
        ((("id", True),), 0, TypeError),
        ((("id", Decimal("NaN")),), 0, ValueError),
        ((("id", 1),), -1, ValueError),
    ],
)
def test_invalid_identities_are_refused(key, revision, error):
    with pytest.raises(error):
        DocumentIdentity("so", "erp.so", key, DocumentKind.ISSUE, revision)


def test_source_ref_for_the_invoice():
    ref = source_ref(
        DocumentIdentity.of("so", "erp.so", [("id", 42), ("no", Decimal("7.0"))], revision=2)
    )
    assert ref == SourceRef(document="so", table="erp.so", key={"id": 42, "no": "7"}, revision=2)


keys = st.lists(
    st.tuples(st.text(min_size=1, max_size=10), st.one_of(st.integers(), st.text(max_size=20))),
    min_size=1,
    max_size=4,
    unique_by=lambda kv: kv[0],
)


@given(
    st.text(max_size=30),
    st.text(max_size=30),
    keys,
    st.sampled_from(list(DocumentKind)),
    st.integers(min_value=0, max_value=10**6),
)
def test_serial_is_deterministic_and_well_formed(doc, table, key, kind, revision):
    identity = DocumentIdentity.of(doc, table, key, kind, revision)
    serial = serial_for(identity)
    assert serial == serial_for(DocumentIdentity.of(doc, table, list(key), kind, revision))
    assert len(serial) == SERIAL_LENGTH == 26
    assert re.fullmatch(r"S[0-9A-HJKMNP-TV-Z]{25}", serial)
    other_kind = DocumentKind.REVERSAL if kind is DocumentKind.ISSUE else DocumentKind.ISSUE
    assert serial != serial_for(DocumentIdentity.of(doc, table, key, other_kind, revision))
    assert serial != serial_for(DocumentIdentity.of(doc, table, key, kind, revision + 1))


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=1, max_value=51))
def test_fast_crockford_digits_equal_the_definition(data, length):
    assert _crockford_prefix(data, length) == _crockford(data, length)


@given(
    name=st.text(min_size=1, max_size=12),
    value=st.one_of(st.integers(), st.text(max_size=20)),
)
def test_the_source_key_shortcut_is_canonical_json(name: str, value: int | str):
    """One int or text key column takes a shortcut; its text must be canonical_json's,
    byte for byte (the ledger's unique constraint compares it)."""
    from syncd.identity import canonical_json, source_key_of

    assert source_key_of(((name, value),)) == canonical_json({name: value})
