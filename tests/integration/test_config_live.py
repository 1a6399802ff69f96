"""check-config --live and preview against the local stack's PostgreSQL and Kafka.

Rows this module creates in the shared `erp` database use order numbers starting
with CFGTEST- and status DRAFT (nothing a running daemon would invoice), and are
deleted afterwards. Schema experiments happen in a database of our own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.cli import main
from syncd.config import load_config, parse_config
from syncd.erp.lines import check_schema, load_lines
from syncd.pipeline.classify import decode_options
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.yaml"
DEMO_TEXT = DEMO.read_text(encoding="utf-8")
EVENT = ROOT / "tests" / "unit" / "data" / "sales_order_confirmed.json"
ERP_SQL = ROOT / "config" / "demo" / "erp.sql"
PG_PORT = os.environ.get("SYNCD_PG_PORT", "15432")
KAFKA_PORT = os.environ.get("SYNCD_KAFKA_PORT", "19092")
ADMIN_DSN = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/postgres"
OWN_DB = "config_helper_test"


def _engine(dsn: str) -> sa.Engine:
    return sa.create_engine(dsn, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 5})


@pytest.fixture(scope="module")
def erp(stack: Stack) -> Iterator[sa.Engine]:
    # The stack's ports may be moved (SYNCD_PG_PORT): never the demo file's 15432 as is.
    engine = _engine(parse_config(_demo_text()).database.dsn_value())
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1 FROM erp.sales_order LIMIT 1"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def own_db(erp) -> Iterator[str]:
    """A private copy of the demo schema to break on purpose."""
    admin = sa.create_engine(ADMIN_DSN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {OWN_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {OWN_DB}"))
    dsn = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/{OWN_DB}"
    engine = _engine(dsn)
    with engine.begin() as conn:
        conn.exec_driver_sql(ERP_SQL.read_text(encoding="utf-8"))
    engine.dispose()
    yield dsn
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {OWN_DB} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def order(erp) -> Iterator[int]:
    """A DRAFT order with two lines in the shared erp database, removed afterwards."""
    order_no = f"CFGTEST-{uuid.uuid4().hex[:12]}"
    with erp.begin() as conn:
        order_id = conn.execute(
            sa.text(
                "INSERT INTO erp.sales_order (order_no, buyer_name, buyer_tax_id) "
                "VALUES (:no, 'Example Buyer Ltd.', '91110108MA01ABCD2H') RETURNING id"
            ),
            {"no": order_no},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO erp.sales_order_line (order_id, line_no, item_name, tax_code, "
                "unit, quantity, unit_price, tax_rate, discount_amount, amount) VALUES "
                "(:id, 2, 'Travel', '3040201000000000000', 'trip', 1, 100, 0.06, 0, 100), "
                "(:id, 1, 'Consulting service', '3040201000000000000', 'hour', 2, 82.57, "
                "0.09, 0, 165.14)"
            ),
            {"id": order_id},
        )
    yield order_id
    with erp.begin() as conn:
        conn.execute(sa.text("DELETE FROM erp.sales_order WHERE id = :id"), {"id": order_id})


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_config_passes_live_check(erp, tmp_path, capsys):
    demo = write_config(tmp_path, _demo_text())  # the demo file on this run's ports
    code = main(["check-config", "-c", str(demo), "--live", "--quiet", "--timeout", "10"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{demo}: OK (live)" in err


def test_live_check_reports_missing_columns_and_misfit_types(own_db, tmp_path, capsys):
    text = (
        _own_db_text()
        .replace("        url: invoice_url", "        url: invoice_ulr")
        .replace("        quantity: quantity", "        quantity: item_name")
        .replace("        issued_at: invoiced_at", "        issued_at: invoice_error")
    )
    config = parse_config(text, "c.yaml")
    engine = _engine(config.database.dsn_value())
    with engine.connect() as conn:
        report = check_schema(conn, config)
    engine.dispose()
    assert sorted(report.errors) == [
        "documents.sales_order.lines.columns.quantity: column erp.sales_order_line.item_name is "
        "VARCHAR(100) (text); expected number",
        "documents.sales_order.write_back.columns.issued_at: column erp.sales_order.invoice_error "
        "is TEXT (text); expected timestamp",
        "documents.sales_order.write_back.columns.url: column erp.sales_order.invoice_ulr does "
        "not exist -- did you mean 'invoice_url'?",
    ]
    path = write_config(tmp_path, text)
    assert main(["check-config", "-c", str(path), "--live", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "invoice_ulr does not exist -- did you mean 'invoice_url'?" in err


def test_live_check_reports_a_missing_account_column(own_db, tmp_path):
    import yaml

    data = yaml.safe_load(_own_db_text())
    data["documents"]["sales_order"]["account"] = {"column": "company_idd", "map": {1: "default"}}
    config = parse_config(yaml.safe_dump(data, sort_keys=False), "c.yaml")
    engine = _engine(config.database.dsn_value())
    with engine.connect() as conn:
        report = check_schema(conn, config)
    engine.dispose()
    assert any(
        e.startswith("documents.sales_order.account.column: column erp.sales_order.company_idd")
        and "does not exist" in e
        for e in report.errors
    ), report.errors


def test_live_check_reports_short_columns_missing_tables_and_replica_identity(own_db, tmp_path):
    engine = _engine(f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/{OWN_DB}")
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE erp.sales_order REPLICA IDENTITY DEFAULT"))
        conn.execute(
            sa.text("ALTER TABLE erp.sales_order ALTER COLUMN red_invoice_no TYPE varchar(12)")
        )
        conn.execute(sa.text("DROP TABLE erp.sales_order_line"))
    try:
        config = parse_config(_own_db_text(), "c.yaml")
        with engine.connect() as conn:
            report = check_schema(conn, config)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE erp.sales_order REPLICA IDENTITY FULL"))
            conn.execute(
                sa.text("ALTER TABLE erp.sales_order ALTER COLUMN red_invoice_no TYPE varchar(20)")
            )
            conn.exec_driver_sql(ERP_SQL.read_text(encoding="utf-8"))
        engine.dispose()
    assert "documents.sales_order: table erp.sales_order_line does not exist" in report.errors
    short = (
        "documents.sales_order.write_back.columns.red_invoice_no: column "
        "erp.sales_order.red_invoice_no holds 12 characters; needs at least 20"
    )
    assert short in report.errors
    assert len(report.warnings) == 1
    assert "has no REPLICA IDENTITY FULL" in report.warnings[0]


def test_live_check_covers_the_return_table_and_the_reissue_condition(own_db, tmp_path, capsys):
    demo = _own_db_text()
    returns_at = demo.index("    returns:\n")
    head, tail = demo[:returns_at], demo[returns_at:]
    text = head.replace(
        "    reissues:\n      column: status\n", "    reissues:\n      column: statuz\n"
    ) + tail.replace("      quantity: quantity\n", "      quantity: reason\n", 1).replace(
        "        red_invoice_no: red_invoice_no\n", "        red_invoice_no: red_invoice_nr\n", 1
    )
    config = parse_config(text, "c.yaml")
    engine = _engine(config.database.dsn_value())
    with engine.connect() as conn:
        report = check_schema(conn, config)
    engine.dispose()
    assert sorted(report.errors) == [
        "documents.sales_order.reissues: column erp.sales_order.statuz does not exist -- "
        "did you mean 'status'?",
        "documents.sales_order.returns.quantity: column erp.sales_return_line.reason is "
        "VARCHAR(40) (text); expected number",
        "documents.sales_order.returns.write_back.red_invoice_no: column "
        "erp.sales_return_line.red_invoice_nr does not exist -- did you mean 'red_invoice_no'?",
    ]
    # the command names the lines of the config file, like the other live checks
    path = write_config(tmp_path, text)
    assert main(["check-config", "-c", str(path), "--live", "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = text.splitlines()
    for key, column in (("quantity: reason", "reason"), ("red_invoice_no: red_invoice_nr", "nr")):
        number = next(i for i, line in enumerate(lines, 1) if line.strip() == key)
        assert f"{path}:{number}:" in err, (column, err)
    statuz = next(i for i, line in enumerate(lines, 1) if line.strip() == "column: statuz")
    assert any(f"{path}:{n}:" in err for n in (statuz - 1, statuz)), err


def test_live_check_verifies_declared_decimal_scales(own_db):
    text = (
        _own_db_text()
        .replace("    unit_price: 8\n", "    unit_price: 2\n")
        .replace("    amount: 2\n", "    amount: 2\n    item_name: 2\n    nope: 1\n")
    )
    config = parse_config(text, "c.yaml")
    engine = _engine(config.database.dsn_value())
    with engine.connect() as conn:
        report = check_schema(conn, config)
    engine.dispose()
    assert sorted(report.errors) == [
        "decimal_scales.erp.sales_order_line.item_name: column erp.sales_order_line.item_name "
        "is VARCHAR(100), not numeric",
        "decimal_scales.erp.sales_order_line.nope: column erp.sales_order_line.nope does not exist",
        "decimal_scales.erp.sales_order_line.unit_price: declared scale 2, but "
        "erp.sales_order_line.unit_price is NUMERIC(20, 8)",
    ]


def test_live_check_reports_missing_topics(erp, tmp_path, capsys):
    path = write_config(tmp_path, _demo_text().replace("topic_prefix: erp", "topic_prefix: nope"))
    assert main(["check-config", "-c", str(path), "--live", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "documents.sales_order.topic: topic nope.erp.sales_order does not exist" in err


def test_unreachable_database_is_one_line_and_its_own_exit_code(tmp_path, capsys):
    path = write_config(tmp_path, _demo_text().replace(f"127.0.0.1:{PG_PORT}", "127.0.0.1:1"))
    # 4: the database is unreachable (docs/operations.md, "Exit codes")
    assert main(["check-config", "-c", str(path), "--live", "--quiet", "--timeout", "2"]) == 4
    err = capsys.readouterr().err
    named = [line for line in err.splitlines() if line.startswith("syncd check-config: ")]
    assert len(named) == 1 and named[0].startswith("syncd check-config: database ")
    assert " unreachable: " in named[0]
    assert "Traceback" not in err


def test_load_lines_reads_in_order(erp, order):
    doc = load_config(DEMO).documents["sales_order"]
    with erp.connect() as conn:
        rows = load_lines(conn, doc, order)
    assert [r["line_no"] for r in rows] == [1, 2]
    assert rows[0]["quantity"] == Decimal("2.00000000")
    with erp.connect() as conn:
        assert load_lines(conn, doc, -1) == []


def test_preview_reads_lines_from_the_database(erp, order, tmp_path, capsys):
    record = json.loads(EVENT.read_text(encoding="utf-8"))
    record["key"]["payload"]["id"] = order
    for image in ("before", "after"):
        record["value"]["payload"][image]["id"] = order
    event = tmp_path / "event.json"
    event.write_text(json.dumps(record), encoding="utf-8")
    demo = write_config(tmp_path, _demo_text())  # the demo file on this run's ports
    code = main(["preview", "-c", str(demo), "--event", str(event)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["problems"]
    assert out["decision"]["action"] == "issue"
    invoice = out["invoice"]
    assert [line["name"] for line in invoice["lines"]] == ["Consulting service", "Travel"]
    assert invoice["totals"] == {
        "net_amount": "265.14",
        "tax_amount": "20.86",
        "gross_amount": "286.00",
    }
    assert invoice["source"]["key"] == {"id": order}


def test_preview_reversal_reads_the_frozen_blue_from_the_ledger(own_db, tmp_path, capsys):
    """In our own database: migrate the ledger, record an issued invoice, preview a cancel."""
    from syncd.changes import RecordPosition
    from syncd.debezium import decode_json
    from syncd.identity import DocumentIdentity as LedgerIdentity
    from syncd.identity import payload_hash
    from syncd.invoice.from_erp import build_blue
    from syncd.ledger import repository as repo
    from syncd.ledger.engine import ledger_engine
    from syncd.lifecycle import DocumentState
    from syncd.rules.decide import decide

    config_path = write_config(tmp_path, _own_db_text())
    assert main(["migrate", "-c", str(config_path)]) == 0
    capsys.readouterr()
    config = load_config(config_path)
    doc = config.documents["sales_order"]

    record = json.loads(EVENT.read_text(encoding="utf-8"))
    confirmed = decode_json(
        RecordPosition("erp.erp.sales_order", 0, 1),
        record["key"],
        record["value"],
        decode_options(config),
    )
    decision = decide(confirmed, doc)
    line = {
        "line_no": 1,
        "item_name": "Consulting service",
        "tax_code": "3040201000000000000",
        "spec": None,
        "unit": "hour",
        "quantity": Decimal(2),
        "unit_price": Decimal("82.57"),
        "tax_rate": Decimal("0.09"),
        "discount_amount": Decimal(0),
    }
    blue = build_blue(doc, confirmed.after, [line], decision.identity).invoice
    assert blue is not None
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, poolclass=sa.pool.NullPool
    )
    with engine.begin() as conn:
        row, created = repo.ensure_document(
            conn,
            LedgerIdentity.of("sales_order", "erp.sales_order", {"id": 42}),
            blue.serial,
            actor="config-test",
            state=DocumentState.READY,
            payload=blue.model_dump(mode="json"),
            payload_hash=payload_hash(blue.model_dump(mode="json")),
        )
        assert created
        repo.transition(
            conn,
            row.id,
            DocumentState.READY,
            DocumentState.ISSUED,
            actor="config-test",
            invoice_no="26312000000000000042",
        )
    engine.dispose()

    payload = record["value"]["payload"]
    payload["after"]["status"] = "CANCELLED"
    event = tmp_path / "cancel.json"
    event.write_text(json.dumps(record), encoding="utf-8")
    code = main(["preview", "-c", str(config_path), "--event", str(event)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["decision"]["action"] == "reverse"
    red = out["invoice"]
    assert red["kind"] == "RED"
    assert red["original_invoice_no"] == "26312000000000000042"
    assert red["totals"]["gross_amount"] == "-180.00"
    assert red["reversal_reason"] == "INVOICING_ERROR"

    # a document the ledger does not know: the daemon would ignore the cancellation
    record["key"]["payload"]["id"] = 43
    for image in ("before", "after"):
        payload[image]["id"] = 43
    event.write_text(json.dumps(record), encoding="utf-8")
    assert main(["preview", "-c", str(config_path), "--event", str(event)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["invoice"] is None
    assert out["note"].startswith("no invoice for this document in the ledger")


def _demo_text() -> str:
    """config/demo.yaml pointed at this run's Kafka (the stack's ports may be moved)."""
    return DEMO_TEXT.replace("127.0.0.1:19092", f"127.0.0.1:{KAFKA_PORT}").replace(
        "127.0.0.1:15432", f"127.0.0.1:{PG_PORT}"
    )


def _own_db_text() -> str:
    return _demo_text().replace(f"{PG_PORT}/erp", f"{PG_PORT}/{OWN_DB}")
