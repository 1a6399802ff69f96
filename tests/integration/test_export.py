"""`syncd export` on the real PostgreSQL: the period's invoices as CSV, JSON and a UBL zip
whose every XML validates against the official OASIS UBL 2.1 schema."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from sqlalchemy import Connection, text

from syncd.identity import DocumentIdentity
from syncd.invoice.model import Invoice
from syncd.ledger import repository as repo
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import OpsEnv, create_env, drop_env
from tests.unit.invoice_samples import blue, multi_rate, red_of, with_discount

pytestmark = pytest.mark.integration

S = DocumentState
D = Decimal
NOV = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)
DEC = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)


def shared_dir() -> Path:
    import os

    override = os.environ.get("SYNCD_SHARED_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    maindoc = shared_dir() / "schemas" / "ubl-2.1" / "maindoc"
    result = {}
    for root, name in (
        ("Invoice", "UBL-Invoice-2.1.xsd"),
        ("CreditNote", "UBL-CreditNote-2.1.xsd"),
    ):
        path = maindoc / name
        if not path.is_file():
            pytest.fail(f"UBL 2.1 schema not found at {path} (set SYNCD_SHARED_DIR)")
        result[root] = etree.XMLSchema(etree.parse(str(path)))
    return result


@pytest.fixture
def env(stack: Any, tmp_path: Path) -> Iterator[OpsEnv]:
    e = create_env(stack, tmp_path)
    yield e
    drop_env(e)


def _payload(invoice: Invoice) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(invoice.to_json())
    return data


def _issued(conn: Connection, n: int, invoice: Invoice, number: str, at: datetime) -> int:
    identity = DocumentIdentity.of("sales_order", "erp.sales_order", {"id": n})
    row, _ = repo.ensure_document(
        conn,
        identity,
        "S" + uuid.uuid4().hex[:24].upper(),
        actor="t",
        state=S.READY,
        payload=_payload(invoice),
    )
    repo.transition(conn, row.id, S.READY, S.ISSUED, actor="t", invoice_no=number, issued_at=at)
    return row.id


def _seed(env: OpsEnv) -> dict[str, int]:
    eng = env.ledger()
    ids: dict[str, int] = {}
    with eng.begin() as c:
        ids["simple"] = _issued(c, 1, blue(), "26310000000000000001", NOV)
        ids["multi"] = _issued(c, 2, multi_rate(), "26310000000000000002", NOV)
        ids["discount"] = _issued(c, 3, with_discount(), "26310000000000000003", NOV)
        ids["reversed"] = _issued(c, 4, blue(), "26310000000000000004", NOV)
        ids["pruned"] = _issued(c, 5, blue(), "26310000000000000005", NOV)
        ids["december"] = _issued(c, 6, blue(), "26310000000000000006", DEC)
        identity = DocumentIdentity.of("sales_order", "erp.sales_order", {"id": 7})
        repo.ensure_document(
            c,
            identity,
            "SREADY" + uuid.uuid4().hex[:10],
            actor="t",
            state=S.READY,
            payload=_payload(blue()),
        )
        red = red_of(blue()).model_copy(update={"original_invoice_no": "26310000000000000004"})
        rev, _ = repo.ensure_reversal(
            c, ids["reversed"], "SRED" + uuid.uuid4().hex[:20].upper(), _payload(red), actor="t"
        )
        repo.mark_reversed(
            c,
            rev.id,
            S.REVERSAL_PENDING,
            actor="t",
            invoice_no="26310000000000000099",
            issued_at=NOV.replace(hour=11),
        )
        ids["red"] = rev.id
    eng.dispose()
    erp = env.erp()
    with erp.begin() as c:
        c.execute(
            text("UPDATE syncd_ops.documents SET payload = NULL WHERE id = :i"),
            {"i": ids["pruned"]},
        )
    erp.dispose()
    return ids


def _export(env: OpsEnv, *extra: str) -> Any:
    return env.syncd(
        "export", "-c", str(env.config_path), "--from", "2026-11-01", "--to", "2026-11-30", *extra
    )


def test_csv_and_json_list_each_invoice_of_the_period_once(env: OpsEnv, tmp_path: Path) -> None:
    _seed(env)
    r = _export(env, "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    by_no = {row["invoice_no"]: row for row in rows}
    assert len(rows) == 6 and len(by_no) == 6  # 5 blue + 1 red in November, no December
    assert "26310000000000000006" not in by_no
    red = by_no["26310000000000000099"]
    assert (red["kind"], red["original_invoice_no"], red["state"]) == (
        "RED",
        "26310000000000000004",
        "REVERSED",
    )
    assert by_no["26310000000000000004"]["state"] == "REVERSED"
    simple = by_no["26310000000000000001"]
    b = blue()
    assert (D(simple["net_amount"]), D(simple["tax_amount"]), D(simple["gross_amount"])) == (
        b.totals.net_amount,
        b.totals.tax_amount,
        b.totals.gross_amount,
    )
    assert simple["buyer_name"] == b.buyer.name and simple["kind"] == "BLUE"
    assert D(red["gross_amount"]) == -b.totals.gross_amount
    assert by_no["26310000000000000005"]["gross_amount"] == ""  # payload pruned
    assert simple["document_key"] == '{"id":1}' or json.loads(simple["document_key"]) == {"id": 1}

    out = tmp_path / "nov.json"
    r = _export(env, "--format", "json", "--output", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["invoices"] == 6
    data = json.loads(out.read_text())
    assert [d["invoice_no"] for d in data] == [row["invoice_no"] for row in rows]
    assert sum(D(d["gross_amount"] or "0") for d in data) == sum(
        D(row["gross_amount"] or "0") for row in rows
    )
    assert not list(tmp_path.glob("*.partial"))


def test_ubl_zip_validates_against_the_oasis_schema(
    env: OpsEnv, tmp_path: Path, schemas: dict[str, etree.XMLSchema]
) -> None:
    _seed(env)
    out = tmp_path / "nov.zip"
    r = _export(env, "--format", "ubl", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "5 invoice(s)" in r.stderr and "1 without XML" in r.stderr
    with zipfile.ZipFile(out) as z:
        manifest = list(csv.DictReader(io.TextIOWrapper(z.open("manifest.csv"), "utf-8")))
        assert len(manifest) == 6
        files = [m for m in manifest if m["status"] == "ok"]
        assert len(files) == 5
        assert [m["status"] for m in manifest if m["invoice_no"].endswith("05")] == [
            "payload pruned"
        ]
        roots = set()
        for m in files:
            xml = z.read(m["file"])
            assert hashlib.sha256(xml).hexdigest() == m["sha256"]
            doc = etree.fromstring(xml)
            root = etree.QName(doc).localname
            roots.add(root)
            schema = schemas[root]
            assert schema.validate(doc), (m["file"], schema.error_log)
            ns = {"cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
            assert doc.findtext("cbc:ID", namespaces=ns) == m["invoice_no"]
        assert roots == {"Invoice", "CreditNote"}
        credit = next(m for m in files if m["kind"] == "RED")
        assert credit["file"].startswith("CreditNote/")


def test_bad_input_and_unreachable_database_answer_in_one_line(env: OpsEnv, tmp_path: Path) -> None:
    r = env.syncd("export", "-c", str(env.config_path), "--from", "2026-13-01", "--to", "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _export(env, "--format", "ubl")
    assert r.returncode == 2 and "--output" in r.stderr
    bad = tmp_path / "down.yaml"
    bad.write_text(
        env.config_path.read_text().replace(
            env.dsn.rsplit("/", 1)[0], "postgresql+psycopg://postgres@127.0.0.1:1"
        )
    )
    r = env.syncd("export", "-c", str(bad), "--from", "2026-11-01", "--to", "2026-11-30")
    assert r.returncode == 4 and "unreachable" in r.stderr and "Traceback" not in r.stderr
