"""A crafted record never stops syncd: the whole per-record path, and the CLI tools.

The daemon's per-record path is: Kafka bytes -> `Classifier.classify` (decode, route,
decide) -> for an issue, `build_blue` (map, tax maths, validate). Whatever the bytes, that
path ends in a classification, a decision, an invoice or its problems, or a typed poison
verdict (DEAD_LETTER with a code and a bounded, printable reason): it never raises.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.changes import RecordPosition
from syncd.cli import main
from syncd.config import SyncdConfig, parse_config
from syncd.identity import DocumentKind
from syncd.invoice.from_erp import MappingResult, build_blue
from syncd.pipeline.classify import Classified, Classifier, Kind
from syncd.rules.decide import identity_of
from syncd.safetext import REASON_LIMIT
from tests import crafted
from tests.unit.config_helpers import DEMO, line_row

TOPIC = "erp.erp.sales_order"
POSITION = RecordPosition(TOPIC, 0, 7)
RECORD_LIMIT = 512 * 1024
#: what a reason may hold: the limit, plus the "... (N characters)" note
REASON_MAX = REASON_LIMIT + 40


def config() -> SyncdConfig:
    data = yaml.safe_load(DEMO.read_text())
    data["limits"] = {"max_record_bytes": RECORD_LIMIT}
    return parse_config(yaml.safe_dump(data))


CONFIG = config()
CLASSIFIER = Classifier(CONFIG)
DOC = CONFIG.documents["sales_order"]
CORPUS = crafted.corpus("erp")


def test_the_corpus_has_at_least_twenty_kinds():
    assert len(CORPUS) >= 20


def assert_poison_verdict(c: Classified) -> None:
    assert c.kind is Kind.DEAD_LETTER
    assert re.fullmatch(r"[a-z_]+", c.code), c.code
    assert c.reason and len(c.reason) <= REASON_MAX
    c.reason.encode("utf-8")  # printable: no unpaired surrogates


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_every_crafted_record_is_a_poison_verdict(kind: str):
    key, value = CORPUS[kind]
    c = CLASSIFIER.classify(POSITION, key, value)
    assert_poison_verdict(c)
    assert c.key == key and c.value == value  # the original bytes go to the dead letter


def test_the_valid_template_is_an_issue():
    key, value = crafted.valid("erp")
    assert CLASSIFIER.classify(POSITION, key, value).kind is Kind.ISSUE


def test_the_reported_record_names_the_limit():
    c = CLASSIFIER.classify(POSITION, *CORPUS["key_decimal_scale_negative"])
    assert c.code == "undecodable"
    assert c.reason == (
        "key.id: decimal scale -999999999 is outside -1000..1000 "
        "(limits.min_decimal_scale/max_decimal_scale)"
    )


def test_an_unexpected_exception_is_poison_not_a_crash(monkeypatch):
    """Whatever a stage raises for one record (here: a bug in deciding), the record is
    dead-lettered with the exception's type and message; the classifier never raises."""
    import syncd.pipeline.classify as classify

    def broken(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("cannot allocate \ud800 " + "x" * 5000)

    monkeypatch.setattr(classify, "decide", broken)
    c = Classifier(CONFIG).classify(POSITION, *crafted.valid("erp"))
    assert_poison_verdict(c)
    assert c.code == "unprocessable"
    assert c.reason.startswith("MemoryError: cannot allocate \\ud800 xxx")


def test_limits_are_configurable():
    data = yaml.safe_load(DEMO.read_text())
    data["limits"] = {"max_decimal_digits": 5, "min_decimal_scale": 0, "max_decimal_scale": 2}
    strict = Classifier(parse_config(yaml.safe_dump(data)))
    c = strict.classify(POSITION, *crafted.valid("erp"))  # total_amount 12345.67: 7 digits
    assert c.kind is Kind.DEAD_LETTER
    assert "limits.max_decimal_digits" in c.reason
    with pytest.raises(Exception, match="min_decimal_scale is above"):
        parse_config(
            yaml.safe_dump({**data, "limits": {"min_decimal_scale": 3, "max_decimal_scale": 2}})
        )


# --------------------------------------------------------------------------- the whole path

EXTREME_NUMBERS = st.sampled_from(
    [
        "1e999999999",
        "-1e999999999",
        "1e-999999999",
        "0e999999999",
        "-0",
        "1e308",
        "5e-324",
        "1" * 1100,
        "0." + "1" * 1100,
        "123456789012345678901234567890",
        "-1e100",
    ]
)
EXTREME_DECIMAL_SCALES = st.sampled_from([-(10**9), 10**9, -1001, 1001, 2**31, -(2**63), 0, 2, 8])


def _json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.just("\ud800"),
        st.just("x" * 100_000),
        st.just("__debezium_unavailable_value"),
        st.just("EtaH"),
        st.just("AQ=="),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=depth * 3,
    )


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


TEMPLATE_KEY, TEMPLATE_VALUE = crafted.valid("erp")
VALUE_PATHS = _paths(json.loads(TEMPLATE_VALUE))
KEY_PATHS = _paths(json.loads(TEMPLATE_KEY))
NUMBER_MARK = "@@NUMBER@@"


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """The valid confirmation with one to three places replaced: by any JSON value, by an
    extreme number (written as raw JSON text), by a decimal of an extreme scale or size,
    by deep nesting; or the whole record's bytes cut or spliced."""
    key, value = json.loads(TEMPLATE_KEY), json.loads(TEMPLATE_VALUE)
    numbers: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        in_key = draw(st.booleans()) and draw(st.booleans())
        doc = key if in_key else value
        path = draw(st.sampled_from(KEY_PATHS if in_key else VALUE_PATHS))
        try:
            choice = draw(st.integers(0, 4))
            if choice == 0:
                replacement: Any = draw(_json_values())
            elif choice == 1:
                numbers.append(draw(EXTREME_NUMBERS))
                replacement = NUMBER_MARK
            elif choice == 2:
                replacement = {"scale": draw(EXTREME_DECIMAL_SCALES), "value": "AQ=="}
            elif choice == 3:
                replacement = "A" * draw(st.sampled_from([4, 4000, 40_000]))  # base64 digits
            else:
                replacement = json.loads("[" * 40 + "]" * 40)
            new = _set(doc, path, replacement)
        except (KeyError, IndexError, TypeError):
            continue
        if in_key:
            key = new
        else:
            value = new
    key_bytes, value_bytes = json.dumps(key).encode(), json.dumps(value).encode()
    for number in numbers:
        target = NUMBER_MARK.join(['"', '"']).encode()
        if target in value_bytes:
            value_bytes = value_bytes.replace(target, number.encode(), 1)
        else:
            key_bytes = key_bytes.replace(target, number.encode(), 1)
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(value_bytes)))
        value_bytes = value_bytes[:cut] + draw(st.binary(max_size=8)) + value_bytes[cut:]
    return key_bytes, value_bytes


EXTREME_LINE_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            Decimal("1e999999999"),
            Decimal("-1e100"),
            Decimal("NaN"),
            Decimal("Infinity"),
            Decimal("1e-999999"),
            Decimal("0." + "3" * 2000),
            10**400,
            "1e999999999",
            "12.5",
            "abc",
            "\ud800",
            True,
            None,
            [],
            {},
        ]
    ),
    _json_values(),
)


@st.composite
def line_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    lines = [line_row(line_no=i + 1) for i in range(draw(st.integers(0, 3)))]
    for line in lines:
        for column in draw(st.lists(st.sampled_from(sorted(line)), max_size=3)):
            line[column] = draw(EXTREME_LINE_VALUES)
    return lines


def whole_path(
    key: bytes | None, value: bytes | None, lines: list[dict[str, Any]]
) -> Classified | MappingResult:
    """What the daemon does with one record before the database: the per-record path."""
    c = CLASSIFIER.classify(POSITION, key, value)
    if c.kind is not Kind.ISSUE:
        return c
    assert c.event is not None and c.doc is not None
    sid = identity_of(c.doc, c.event, DocumentKind.ISSUE, 0)
    return build_blue(
        c.doc, c.event.after or {}, lines, sid, max_lines=CONFIG.limits.max_lines_per_document
    )


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(record=mutated_records(), lines=line_sets())
def test_the_whole_per_record_path_never_raises(
    record: tuple[bytes, bytes], lines: list[dict[str, Any]]
):
    out = whole_path(*record, lines)
    if isinstance(out, Classified):
        assert out.kind in set(Kind)
        if out.kind is Kind.DEAD_LETTER:
            assert_poison_verdict(out)
    else:
        assert (out.invoice is not None) or out.problems
        for problem in out.problems:
            assert len(problem.message) <= 600  # PROBLEM_LIMIT and its clipping note


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=line_sets())
def test_extreme_line_values_are_problems_not_exceptions(lines: list[dict[str, Any]]):
    out = whole_path(*crafted.valid("erp"), lines)
    assert isinstance(out, MappingResult)


def test_too_many_lines_is_a_problem():
    lines = [line_row(line_no=i) for i in range(CONFIG.limits.max_lines_per_document + 1)]
    out = whole_path(*crafted.valid("erp"), lines)
    assert isinstance(out, MappingResult)
    assert [p.code for p in out.problems] == ["TOO_MANY_LINES"]


# --------------------------------------------------------------------------- the CLI tools


def _record_file(tmp_path: Path, key: bytes | None, value: bytes | None) -> Path:
    """The `syncd decode` input, with the record's bytes spliced in as they are."""
    path = tmp_path / "record.json"
    path.write_bytes(
        b'{"topic": "' + TOPIC.encode() + b'", "partition": 0, "offset": 7, '
        b'"key": ' + (key or b"null") + b', "value": ' + (value or b"null") + b"}"
    )
    return path


def _check_cli(capsys: pytest.CaptureFixture[str], code: int, size: int) -> str:
    out, err = capsys.readouterr()
    assert code in (0, 1, 2)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(out) <= 10 * size + 65536  # bounded output
    if code == 2:
        assert err.count("\n") == 1, err  # one line naming what is wrong
        assert len(err) < 1200
    out.encode("utf-8")
    err.encode("utf-8")
    return err


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_decode_cli_never_prints_a_traceback(kind: str, tmp_path: Path, capsys):
    key, value = CORPUS[kind]
    path = _record_file(tmp_path, key, value)
    code = main(["decode", "--event", str(path)])
    err = _check_cli(capsys, code, path.stat().st_size)
    if kind in crafted.DECIDED_POISON or kind in crafted.ONLY_OVER_TEST_LIMITS:
        assert code == 0, err  # decodes (under the default limits); deciding it fails
    else:
        assert code == 2, f"{kind} decoded without error"
        assert err.startswith("syncd decode: ")


@pytest.mark.parametrize("kind", sorted(CORPUS))
def test_preview_cli_never_prints_a_traceback(kind: str, tmp_path: Path, capsys):
    key, value = CORPUS[kind]
    path = _record_file(tmp_path, key, value)
    lines = tmp_path / "lines.json"
    lines.write_text(
        json.dumps([{k: str(v) if isinstance(v, Decimal) else v for k, v in line_row().items()}])
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {**yaml.safe_load(DEMO.read_text()), "limits": {"max_record_bytes": RECORD_LIMIT}}
        )
    )
    code = main(["preview", "-c", str(cfg), "--event", str(path), "--lines", str(lines)])
    _check_cli(capsys, code, path.stat().st_size)
    assert code != 0, f"{kind} previewed as a valid invoice"


LINE_PROBES: dict[str, Any] = {
    "quantity_huge_exponent": {"quantity": "1e999999999"},
    "quantity_huge_exponent_number": {"quantity": Decimal("1e999999999")},
    "price_negative_huge": {"unit_price": Decimal("-1e100")},
    "price_tiny": {"unit_price": Decimal("1e-999999999")},
    "price_nan": {"unit_price": "NaN"},
    "price_infinity": {"unit_price": "-Infinity"},
    "rate_many_digits": {"tax_rate": Decimal("0." + "1" * 5000)},
    "quantity_long_int": {"quantity": int("9" * 4000)},
    "quantity_text": {"quantity": "many"},
    "quantity_bool": {"quantity": True},
    "quantity_object": {"quantity": {"a": 1}},
    "quantity_deep": {"quantity": json.loads("[" * 500 + "]" * 500)},
    "name_surrogate": {"item_name": "\ud800"},
    "name_huge": {"item_name": "x" * 1_000_000},
    "name_number": {"item_name": 42},
    "tax_code_deep": {"tax_code": json.loads("[" * 900 + "]" * 900)},
    "line_no_object": {"line_no": {"x": [1]}},
    "discount_huge": {"discount_amount": Decimal("9e99")},
    "every_column_null": dict.fromkeys(line_row()),
}


@pytest.mark.parametrize("probe", sorted(LINE_PROBES))
def test_preview_lines_never_print_a_traceback(probe: str, tmp_path: Path, capsys):
    key, value = crafted.valid("erp")
    path = _record_file(tmp_path, key, value)
    line = {**line_row(), **LINE_PROBES[probe]}
    text = json.dumps([line], default=str).replace('"\\ud800"', '"\\ud800"')
    text = text.replace('"1e999999999"', "1e999999999") if "number" in probe else text
    lines = tmp_path / "lines.json"
    lines.write_text(text, encoding="utf-8", errors="surrogatepass")
    code = main(["preview", "-c", str(DEMO), "--event", str(path), "--lines", str(lines)])
    _check_cli(capsys, code, lines.stat().st_size + path.stat().st_size)
    assert code in (1, 2), f"{probe} previewed as a valid invoice"


def test_decode_output_is_bounded_by_the_input(tmp_path: Path, capsys):
    """The largest decimal the limits allow prints at most a few times its wire size."""
    key, value = crafted.valid("erp")
    doc = json.loads(value)
    for f in doc["schema"]["fields"][1]["fields"]:
        if f["field"] == "total_amount":
            f["parameters"]["scale"] = "-1000"
    doc["payload"]["after"]["total_amount"] = "AQ=="
    path = _record_file(tmp_path, key, json.dumps(doc).encode())
    code = main(["decode", "--event", str(path)])
    _check_cli(capsys, code, path.stat().st_size)
    assert code == 0
