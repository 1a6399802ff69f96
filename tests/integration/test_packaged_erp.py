"""A packaged ERP's schema on the real PostgreSQL: related rows, line filters, taxes through a
link table, write-back to a side table, `check-config --live` -- all with config/tryton.yaml.

The database `packaged_erp_test` (our own, dropped afterwards) holds the tables of Tryton 8.2
that config/tryton.yaml reads, with Tryton's names and column types as recorded in
docs/packaged-erp.md (a subset of their columns), so this runs in `make test` without Tryton
installed. The rows go through the intake's transaction (`Intake.run`) into a real ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.changes import ChangeEvent, Op, RecordPosition
from syncd.config import SyncdConfig, load_config
from syncd.erp.lines import check_schema, load_lines
from syncd.erp.related import resolve_document
from syncd.erp.writeback import (
    ResultStatus,
    WriteBack,
    apply_side_table_migrations,
    apply_writeback,
    apply_writebacks,
)
from syncd.identity import DocumentKind
from syncd.ledger import repository as repo
from syncd.ledger.engine import ledger_engine
from syncd.ledger.migrate import upgrade
from syncd.lifecycle import DocumentState
from syncd.pipeline.classify import Classified, Kind
from syncd.pipeline.intake import Intake
from syncd.rules.decide import Action, decide, identity_of
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TRYTON = ROOT / "config" / "tryton.yaml"
PG_PORT = os.environ.get("SYNCD_PG_PORT", "15432")
ADMIN_DSN = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/postgres"
DB = "packaged_erp_test"
DSN = f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/{DB}"

SCHEMA = """
CREATE TABLE party_party (id integer PRIMARY KEY, code varchar NOT NULL, name varchar);
CREATE TABLE party_identifier (id integer PRIMARY KEY, party integer NOT NULL
    REFERENCES party_party, type varchar, code varchar NOT NULL);
CREATE TABLE party_address (id integer PRIMARY KEY, party integer NOT NULL REFERENCES party_party,
    street_unstructured text, city varchar);
CREATE TABLE product_uom (id integer PRIMARY KEY, name varchar NOT NULL, symbol varchar NOT NULL);
CREATE TABLE product_template (id integer PRIMARY KEY, name varchar NOT NULL);
CREATE TABLE product_product (id integer PRIMARY KEY, template integer NOT NULL
    REFERENCES product_template);
CREATE TABLE product_identifier (id integer PRIMARY KEY, product integer NOT NULL
    REFERENCES product_product, type varchar, code varchar NOT NULL);
CREATE TABLE account_tax (id integer PRIMARY KEY, name varchar NOT NULL, type varchar NOT NULL,
    rate numeric);
CREATE TABLE account_invoice (id integer PRIMARY KEY, type varchar NOT NULL, state varchar,
    number varchar, party integer NOT NULL REFERENCES party_party,
    invoice_address integer NOT NULL REFERENCES party_address, invoice_date date,
    sequence_type_cache varchar);
CREATE TABLE account_invoice_line (id integer PRIMARY KEY, invoice integer
    REFERENCES account_invoice, type varchar NOT NULL, sequence integer,
    product integer REFERENCES product_product, description text,
    quantity double precision, unit integer REFERENCES product_uom, unit_price numeric,
    origin varchar);
CREATE TABLE "account_invoice_line-account_tax" (id integer PRIMARY KEY,
    line integer NOT NULL REFERENCES account_invoice_line,
    tax integer NOT NULL REFERENCES account_tax, UNIQUE (line, tax));

INSERT INTO party_party VALUES (2, '1', 'Acme Trading Co., Ltd.'),
    (4, '3', 'Shanghai Bright Future Trading Co., Ltd.');
INSERT INTO party_identifier VALUES (2, 2, 'cn_vat', '91310115MA1K4PLN89'),
    (4, 4, 'cn_vat', '91310000MA1FL4T5X6'), (7, 4, 'eu_vat', 'FR40303265045');
INSERT INTO party_address VALUES (4, 4, '88 Nanjing Rd', 'Shanghai');
INSERT INTO product_uom VALUES (1, 'Unit', 'u');
INSERT INTO product_template VALUES (1, 'Laptop computer'), (4, 'IT consulting');
INSERT INTO product_product VALUES (1, 1), (4, 4);
INSERT INTO product_identifier VALUES (1, 1, NULL, '1090511030000000000'),
    (2, 1, 'ean', '4006381333931'), (4, 4, NULL, '3040201990000000000');
INSERT INTO account_tax VALUES (1, 'VAT 13%', 'percentage', 0.13),
    (3, 'VAT 6%', 'percentage', 0.06), (9, 'Eco fee', 'fixed', NULL);
-- invoice 3: two products and a comment line; invoice 6: a line with two VAT taxes and one
-- with none
INSERT INTO account_invoice VALUES
    (3, 'out', 'posted', 'INV2026-00001', 4, 4, '2026-12-03', 'invoice'),
    (6, 'out', 'posted', 'INV2026-00003', 4, 4, '2026-12-03', 'invoice'),
    (8, 'out', 'posted', 'INV2026-00004', 4, 4, '2026-12-03', 'credit_note'),
    (11, 'out', 'posted', 'INV2026-00005', 4, 4, '2026-12-03', 'credit_note');
-- credit note 8: all of line 9, one of the three units of line 10 (invoice 3), and the
-- copied comment line; credit note 11: lines of invoices 3 and 6 at once
INSERT INTO account_invoice_line VALUES
    (9, 3, 'line', NULL, 1, NULL, 2, 1, 6000.00, 'sale.line,1'),
    (10, 3, 'line', NULL, 4, NULL, 3, 1, 1500.00, NULL),
    (12, 3, 'comment', NULL, NULL, 'Delivered to dock 4', NULL, NULL, NULL, NULL),
    (20, 6, 'line', NULL, 1, NULL, 1, 1, 6000.00, NULL),
    (21, 6, 'line', NULL, 4, NULL, 1, 1, 1500.00, NULL),
    (30, 8, 'line', NULL, 1, NULL, -2, 1, 6000.00, 'account.invoice.line,9'),
    (31, 8, 'line', NULL, 4, NULL, -1, 1, 1500.00, 'account.invoice.line,10'),
    (32, 8, 'comment', NULL, NULL, 'Delivered to dock 4', NULL, NULL, NULL,
        'account.invoice.line,12'),
    (40, 11, 'line', NULL, 1, NULL, -1, 1, 6000.00, 'account.invoice.line,9'),
    (41, 11, 'line', NULL, 1, NULL, -1, 1, 6000.00, 'account.invoice.line,20');
INSERT INTO "account_invoice_line-account_tax" VALUES
    (1, 9, 1), (2, 9, 9), (3, 10, 3), (4, 20, 1), (5, 20, 3), (6, 30, 1), (7, 31, 3),
    (8, 40, 1), (9, 41, 1);
"""


@pytest.fixture(scope="module")
def database(stack: Stack) -> Iterator[sa.Engine]:
    admin = sa.create_engine(ADMIN_DSN, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {DB}"))
    engine = sa.create_engine(DSN, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA.replace("%", "%%"))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module")
def config(monkeypatch_module: pytest.MonkeyPatch) -> SyncdConfig:
    monkeypatch_module.setenv("SYNCD_DATABASE__DSN", DSN)
    return load_config(TRYTON)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _read(conn: sa.Connection, config: SyncdConfig, invoice: int) -> tuple[Any, list[Any]]:
    doc = config.documents["customer_invoice"]
    row = dict(
        conn.execute(sa.text("SELECT * FROM account_invoice WHERE id = :i"), {"i": invoice})
        .mappings()
        .one()
    )
    lines = load_lines(conn, doc, invoice, limit=100)
    return resolve_document(conn, doc, row, lines), lines


def test_header_and_lines_read_through_relations(database, config):
    with database.connect() as conn:
        header, lines = _read(conn, config, 3)
    assert header["party.name"] == "Shanghai Bright Future Trading Co., Ltd."
    assert header["uscc.code"] == "91310000MA1FL4T5X6"  # the cn_vat one, not the eu_vat
    assert header["address.city"] == "Shanghai"
    assert [line["id"] for line in lines] == [9, 10]  # the comment line is filtered out
    # line 9 also carries the fixed eco fee: not a VAT (where: {type: percentage})
    assert [str(line["vat.rate"]) for line in lines] == ["0.13", "0.06"]
    assert [line["tax_code.code"] for line in lines] == [
        "1090511030000000000",  # the untyped identifier, not the EAN
        "3040201990000000000",
    ]
    assert [line["template.name"] for line in lines] == ["Laptop computer", "IT consulting"]


def test_a_line_needs_exactly_one_vat(database, config):
    with database.connect() as conn:
        _header, lines = _read(conn, config, 6)
    assert "2 rows in public.account_tax for this line (id=20)" in str(lines[0]["vat.rate"])
    assert "no row in public.account_tax for this line" in str(lines[1]["vat.rate"])


def test_check_config_live_reads_every_related_table(database, config):
    with database.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS syncd_tryton CASCADE")
    with database.connect() as conn:
        report = check_schema(conn, config)
    assert report.errors == [
        "documents.customer_invoice: table syncd_tryton.invoice_result does not exist "
        "(write_back.migration creates it: run `syncd migrate -c <config>`)"
    ]
    assert any("quantity is a float type" in w for w in report.warnings)
    with database.begin() as conn:
        assert apply_side_table_migrations(conn, config) == ["syncd_tryton.invoice_result"]
        apply_side_table_migrations(conn, config)  # idempotent
    with database.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE party_identifier RENAME COLUMN code TO value")
        conn.exec_driver_sql(
            'ALTER TABLE "account_invoice_line-account_tax" RENAME COLUMN line TO line_id'
        )
        report = check_schema(conn, config)
        conn.rollback()
    assert sorted(report.errors) == [
        "documents.customer_invoice.header.buyer.tax_id: column public.party_identifier.code "
        "does not exist",
        "documents.customer_invoice.lines.related.vat.through.join: column "
        "public.account_invoice_line-account_tax.line does not exist -- did you mean 'line_id'?",
    ]


def test_side_table_write_back_inserts_then_updates(database, config):
    doc = config.documents["customer_invoice"]
    with database.begin() as conn:
        apply_side_table_migrations(conn, config)
        conn.exec_driver_sql("DELETE FROM syncd_tryton.invoice_result")
        assert apply_writeback(conn, doc, {"id": 3}, WriteBack(ResultStatus.PENDING)) == 1
        issued = WriteBack(ResultStatus.ISSUED, invoice_no="26312000000000000001")
        assert apply_writeback(conn, doc, {"id": 3}, issued) == 1
        assert apply_writeback(conn, doc, {"id": 3}, issued) == 0  # same values: no write
        problems = apply_writebacks(
            conn,
            [
                (doc, {"id": 3}, issued),
                (doc, {"id": 6}, WriteBack(ResultStatus.INVALID, error="no VAT")),
            ],
        )
        assert problems == []
        rows = conn.execute(
            sa.text(
                "SELECT id, invoice_no, status, error FROM syncd_tryton.invoice_result ORDER BY id"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (3, "26312000000000000001", "ISSUED", None),
        (6, None, "INVALID", "no VAT"),
    ]
    # Tryton's own tables are untouched
    with database.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("account_invoice", "public")}
    assert "invoice_no" not in columns and "status" not in columns


class _NoPartitions:
    def get(self, tp: tuple[str, int]) -> None:
        return None


def _event(config: SyncdConfig, invoice: int, offset: int) -> Classified:
    doc = config.documents["customer_invoice"]
    engine = sa.create_engine(DSN, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        row = dict(
            conn.execute(sa.text("SELECT * FROM account_invoice WHERE id = :i"), {"i": invoice})
            .mappings()
            .one()
        )
    engine.dispose()
    position = RecordPosition("tryton.public.account_invoice", 0, offset)
    before = dict(row, state="validated")
    event = ChangeEvent(
        position, Op.UPDATE, doc.table, {"id": invoice}, before, row, 1_700_000_000_000, False
    )
    return Classified(position, Kind.ISSUE, "qualifies", event=event, doc=doc)


def test_intake_freezes_related_values_and_writes_the_side_table(database, config):
    upgrade(DSN, "syncd")
    ledger = ledger_engine(DSN, "syncd")
    intake = Intake(config, group="it-packaged", owner="it")
    try:
        with ledger.begin() as conn:
            apply_side_table_migrations(conn, config)
            conn.exec_driver_sql("DELETE FROM syncd_tryton.invoice_result")
            result = intake.run(conn, [_event(config, 3, 1), _event(config, 6, 2)], _NoPartitions())
        doc = config.documents["customer_invoice"]
        with ledger.connect() as conn:
            good = repo.latest_revision(
                conn,
                *_ledger_key(identity_of(doc, _event(config, 3, 1).event, DocumentKind.ISSUE, 0)),
            )
            bad = repo.latest_revision(
                conn,
                *_ledger_key(identity_of(doc, _event(config, 6, 2).event, DocumentKind.ISSUE, 0)),
            )
            side = dict(
                tuple(r)
                for r in conn.execute(
                    sa.text("SELECT id, status FROM syncd_tryton.invoice_result")
                ).all()
            )
    finally:
        ledger.dispose()
    assert len(result.to_drive) == 1
    assert good is not None and good.state is DocumentState.READY and good.payload is not None
    buyer = good.payload["buyer"]
    assert (buyer["name"], buyer["tax_id"]) == (
        "Shanghai Bright Future Trading Co., Ltd.",
        "91310000MA1FL4T5X6",
    )
    assert [line["tax_code"] for line in good.payload["lines"]] == [
        "1090511030000000000",
        "3040201990000000000",
    ]
    assert bad is not None and bad.state is DocumentState.INVALID
    assert "2 rows in public.account_tax" in (bad.last_error or "")
    assert side == {6: "INVALID"}


def _credit_event(config: SyncdConfig, note: int, offset: int) -> Classified:
    issue = _event(config, note, offset)
    assert issue.event is not None and issue.doc is not None
    decision = decide(issue.event, issue.doc)
    assert decision.action is Action.CREDIT, decision
    return Classified(
        issue.position,
        Kind.CREDIT,
        decision.reason,
        event=issue.event,
        doc=issue.doc,
        decision=decision,
    )


def test_a_credit_note_becomes_one_red_invoice_of_the_credited_invoice(database, config):
    """Tryton's credit note 8 credits invoice 3 through its lines' `origin`: one red
    invoice under its own key for all of line 9 and one unit of line 10, referencing invoice
    3's blue number; again, nothing new; credit note 11 credits two invoices: refused with
    the reason in its side-table row."""
    upgrade(DSN, "syncd")
    ledger = ledger_engine(DSN, "syncd")
    intake = Intake(config, group="it-packaged", owner="it")
    doc = config.documents["customer_invoice"]
    blue_no = "26312000000000000001"
    try:
        with ledger.begin() as conn:
            apply_side_table_migrations(conn, config)
            intake.run(conn, [_event(config, 3, 10)], _NoPartitions())
            issue = repo.latest_revision(
                conn,
                *_ledger_key(identity_of(doc, _event(config, 3, 10).event, DocumentKind.ISSUE, 0)),
            )
            assert issue is not None
            if issue.state is DocumentState.READY:
                repo.transition(conn, issue.id, DocumentState.READY, DocumentState.SUBMITTED)
                repo.transition(
                    conn,
                    issue.id,
                    DocumentState.SUBMITTED,
                    DocumentState.ISSUED,
                    invoice_no=blue_no,
                )
        with ledger.begin() as conn:
            result = intake.run(
                conn, [_credit_event(config, 8, 11), _credit_event(config, 11, 12)], _NoPartitions()
            )
        with ledger.begin() as conn:
            again = intake.run(conn, [_credit_event(config, 8, 13)], _NoPartitions())
        with ledger.connect() as conn:
            note = _credit_event(config, 8, 11).decision
            assert note is not None and note.identity is not None
            red = repo.find_document(conn, note.identity)
            blue = repo.get_document(conn, issue.id)
            side = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    sa.text("SELECT id, status, error FROM syncd_tryton.invoice_result")
                ).all()
            }
    finally:
        ledger.dispose()
    assert red is not None and red.state is DocumentState.REVERSAL_PENDING
    assert red.reverses_id == issue.id and red.payload is not None
    assert red.payload["kind"] == "RED"
    assert red.payload["original_invoice_no"] == blue_no
    assert [(ln["line_no"], Decimal(ln["quantity"])) for ln in red.payload["lines"]] == [
        (1, Decimal(-2)),
        (2, Decimal(-1)),
    ]
    assert blue.state is DocumentState.ISSUED  # a credit note does not reverse the blue
    assert result.to_drive == [red.id]
    assert again.to_drive == [red.id]  # the same credit note again: the same red, driven
    assert side[8][0] == "REVERSAL_PENDING"
    assert side[11][0] == "INVALID"
    assert "its lines credit 2 documents (3, 6); one expected" in (side[11][1] or "")


def _ledger_key(identity: Any) -> tuple[str, str, str]:
    return identity.document_type, identity.source_table, identity.source_key
