"""The Nuonuo dialect's durable state: orders, red-confirmation forms, tokens, requests.

SQLite, committed before each answer leaves (the app commits per request), so a
restarted sandbox still knows every order number it accepted -- a repeat is refused
(`E9106`) across restarts exactly as on the real platform.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

BEIJING: Final = timezone(timedelta(hours=8))

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS orders (
    order_no TEXT PRIMARY KEY,
    app_key TEXT NOT NULL,
    serial_no TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at REAL NOT NULL,
    fail_cause TEXT,
    invoice_no TEXT UNIQUE,
    invoice_time INTEGER,
    net TEXT NOT NULL, tax TEXT NOT NULL, gross TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'BLUE',
    original_invoice_no TEXT,
    reinvoices INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS red_forms (
    bill_id TEXT PRIMARY KEY,
    blue_no TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at REAL NOT NULL,
    bill_no TEXT,
    red_order_no TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, app_key TEXT NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS token_fetches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, app_key TEXT NOT NULL, at REAL NOT NULL,
    granted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, method TEXT, path TEXT NOT NULL,
    app_key TEXT, status INTEGER NOT NULL, code TEXT, serial TEXT, fault TEXT, user_tax TEXT
);
"""


class NuonuoStore:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(orders)")}
        for name in ("portal", "forgotten"):  # stores written before the list existed
            if name not in columns:
                self._db.execute(f"ALTER TABLE orders ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(requests)")}
        if "user_tax" not in columns:  # a log file written before the column existed
            self._db.execute("ALTER TABLE requests ADD COLUMN user_tax TEXT")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def unit(self) -> Iterator[sqlite3.Connection]:
        """One request's effects, committed together before its answer is sent."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _next(self, name: str) -> int:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (name,),
        )
        return int(
            self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]
        )

    # --- tokens -----------------------------------------------------------------------

    def fetches_since(self, app_key: str, since: float) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM token_fetches WHERE app_key = ? AND at >= ? AND granted = 1",
            (app_key, since),
        ).fetchone()
        return int(row[0])

    def record_fetch(self, app_key: str, now: float, token: str | None, expires_at: float) -> None:
        self._db.execute(
            "INSERT INTO token_fetches(app_key, at, granted) VALUES (?, ?, ?)",
            (app_key, now, 1 if token else 0),
        )
        if token:
            self._db.execute(
                "INSERT INTO tokens(token, app_key, expires_at) VALUES (?, ?, ?)",
                (token, app_key, expires_at),
            )

    def token_owner(self, token: str, now: float) -> str | None:
        row = self._db.execute(
            "SELECT app_key FROM tokens WHERE token = ? AND expires_at > ?", (token, now)
        ).fetchone()
        return None if row is None else str(row[0])

    def expire_tokens(self) -> None:
        self._db.execute("UPDATE tokens SET expires_at = 0")

    def token_stats(self) -> dict[str, dict[str, int]]:
        rows = self._db.execute(
            "SELECT app_key, sum(granted) AS granted, count(*) AS asked"
            " FROM token_fetches GROUP BY app_key"
        ).fetchall()
        return {
            r["app_key"]: {"fetches": int(r["granted"]), "asked": int(r["asked"])} for r in rows
        }

    # --- orders -----------------------------------------------------------------------

    def order(self, order_no: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM orders WHERE order_no = ?", (order_no,)).fetchone()
        return None if row is None else dict(row)

    def order_by_serial(self, serial_no: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM orders WHERE serial_no = ?", (serial_no,)).fetchone()
        return None if row is None else dict(row)

    def order_by_invoice_no(self, invoice_no: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT * FROM orders WHERE invoice_no = ?", (invoice_no,)
        ).fetchone()
        return None if row is None else dict(row)

    def accept_order(
        self,
        order: dict[str, Any],
        *,
        app_key: str,
        now: float,
        due_at: float,
        totals: tuple[Decimal, Decimal, Decimal],
        kind: str = "BLUE",
        original_invoice_no: str | None = None,
    ) -> str:
        serial_no = datetime.fromtimestamp(now, BEIJING).strftime("%y%m%d%H%M%S") + (
            f"{self._next('serial'):08d}"
        )
        net, tax, gross = totals
        self._db.execute(
            "INSERT INTO orders(order_no, app_key, serial_no, payload, status, due_at, net, tax,"
            " gross, kind, original_invoice_no, created_at)"
            " VALUES (?, ?, ?, ?, '20', ?, ?, ?, ?, ?, ?, ?)",
            (
                order["orderNo"],
                app_key,
                serial_no,
                json.dumps(order, ensure_ascii=False),
                due_at,
                str(net),
                str(tax),
                str(gross),
                kind,
                original_invoice_no,
                now,
            ),
        )
        return serial_no

    def finish_order(self, order_no: str, now: float, outcome: str, cause: str | None) -> None:
        """20 -> 2 (issued), 22 (failed) or 24 (seal failed)."""
        if outcome == "2":
            number = (
                datetime.fromtimestamp(now, BEIJING).strftime("%y")
                + "312000"
                + f"{self._next('invoice_no'):012d}"
            )
            self._db.execute(
                "UPDATE orders SET status = '2', invoice_no = ?, invoice_time = ?,"
                " fail_cause = NULL WHERE order_no = ?",
                (number, int(now * 1000), order_no),
            )
        else:
            self._db.execute(
                "UPDATE orders SET status = ?, fail_cause = ? WHERE order_no = ?",
                (outcome, cause, order_no),
            )

    def requeue(self, order_no: str, due_at: float) -> None:
        self._db.execute(
            "UPDATE orders SET status = '20', due_at = ?, reinvoices = reinvoices + 1"
            " WHERE order_no = ?",
            (due_at, order_no),
        )

    def due_orders(self, now: float) -> list[str]:
        rows = self._db.execute(
            "SELECT order_no FROM orders WHERE status = '20' AND due_at <= ? ORDER BY due_at",
            (now,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def issued(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT o.order_no, o.invoice_no, o.kind, o.payload, o.original_invoice_no, o.net,"
            " o.tax, o.gross, o.invoice_time, f.bill_id FROM orders o"
            " LEFT JOIN red_forms f ON f.red_order_no = o.order_no"
            " WHERE o.status = '2' ORDER BY o.invoice_no"
        ).fetchall()
        out = []
        for r in rows:
            payload = json.loads(r["payload"])
            out.append(
                {
                    # syncd's serial: the order number, or for a red invoice its form's billId
                    "serial": r["bill_id"] or r["order_no"],
                    "invoice_no": r["invoice_no"],
                    "kind": r["kind"],
                    "invoice_type": "SPECIAL" if payload.get("invoiceLine") == "bs" else "ORDINARY",
                    "original_invoice_no": r["original_invoice_no"],
                    "net_amount": r["net"],
                    "tax_amount": r["tax"],
                    "gross_amount": r["gross"],
                    "issued_at": datetime.fromtimestamp(r["invoice_time"] / 1000, UTC)
                    .astimezone(BEIJING)
                    .isoformat(timespec="seconds"),
                }
            )
        return out

    # --- the invoice list, the portal, forgetting ----------------------------------------

    def forget(self, order_no: str) -> None:
        self._db.execute("UPDATE orders SET forgotten = 1 WHERE order_no = ?", (order_no,))

    def list_orders(
        self, seller_tax_id: str, start_ms: int, end_ms: int, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page) of issued or voided invoices of one seller whose invoice time
        is in [start_ms, end_ms], by invoice number; each row with `red_bill_id`, the red
        form a red invoice came from."""
        where = (
            "o.status IN ('2', '3') AND o.invoice_time BETWEEN ? AND ?"
            " AND json_extract(o.payload, '$.salerTaxNum') = ?"
        )
        args = (start_ms, end_ms, seller_tax_id)
        count = f"SELECT count(*) FROM orders o WHERE {where}"  # noqa: S608 - fixed fragments
        select = (
            "SELECT o.*, f.bill_id AS red_bill_id FROM orders o"  # noqa: S608 - fixed fragments
            f" LEFT JOIN red_forms f ON f.red_order_no = o.order_no WHERE {where}"
            " ORDER BY o.invoice_no LIMIT ? OFFSET ?"
        )
        ((total,),) = self._db.execute(count, args)
        rows = self._db.execute(select, (*args, limit, offset)).fetchall()
        return int(total), [dict(r) for r in rows]

    def reversed_by(self, invoice_no: str) -> str | None:
        row = self._db.execute(
            "SELECT invoice_no FROM orders WHERE kind = 'RED' AND original_invoice_no = ?"
            " AND status = '2'",
            (invoice_no,),
        ).fetchone()
        return None if row is None else str(row[0])

    def add_portal_order(
        self,
        order: dict[str, Any],
        *,
        app_key: str,
        now: float,
        issued_at: float,
        totals: tuple[Decimal, Decimal, Decimal],
    ) -> str:
        """An invoice issued by hand in the portal: issued at once, under an order number of
        the platform's own (`PORTAL...`, never listed); returns that order number."""
        order_no = f"PORTAL{self._next('portal'):012d}"
        self.accept_order(
            {**order, "orderNo": order_no}, app_key=app_key, now=now, due_at=now, totals=totals
        )
        self._db.execute("UPDATE orders SET portal = 1 WHERE order_no = ?", (order_no,))
        self.finish_order(order_no, issued_at, "2", None)
        return order_no

    # --- red-confirmation forms ---------------------------------------------------------

    def red_form(self, bill_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM red_forms WHERE bill_id = ?", (bill_id,)).fetchone()
        return None if row is None else dict(row)

    def red_form_for_blue(self, blue_no: str) -> dict[str, Any] | None:
        """The first live form of a blue invoice (None: it has none)."""
        live = self.red_forms_for_blue(blue_no)
        return live[0] if live else None

    def red_forms_for_blue(self, blue_no: str) -> list[dict[str, Any]]:
        """Every live form (applied for, pending with us or the buyer, confirmed or issued)
        of a blue invoice."""
        rows = self._db.execute(
            "SELECT * FROM red_forms WHERE blue_no = ? AND status IN ('01','02','03','04','15')"
            " ORDER BY created_at, bill_id",
            (blue_no,),
        ).fetchall()
        return [dict(r) for r in rows]

    def add_red_form(
        self,
        bill_id: str,
        blue_no: str,
        payload: dict[str, Any],
        status: str,
        now: float,
        due: float,
    ) -> None:
        self._db.execute(
            "INSERT INTO red_forms(bill_id, blue_no, payload, status, due_at, bill_no, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                bill_id,
                blue_no,
                json.dumps(payload, ensure_ascii=False),
                status,
                due,
                f"{self._next('bill_no'):018d}",
                now,
            ),
        )

    _RED_FORM_COLUMNS: Final = frozenset({"status", "due_at", "red_order_no", "payload"})

    def set_red_form(self, bill_id: str, **values: object) -> None:
        for name, value in values.items():
            if name not in self._RED_FORM_COLUMNS:
                raise ValueError(f"not a settable red-form column: {name}")
            self._db.execute(
                {
                    "status": "UPDATE red_forms SET status = ? WHERE bill_id = ?",
                    "due_at": "UPDATE red_forms SET due_at = ? WHERE bill_id = ?",
                    "red_order_no": "UPDATE red_forms SET red_order_no = ? WHERE bill_id = ?",
                    "payload": "UPDATE red_forms SET payload = ? WHERE bill_id = ?",
                }[name],
                (json.dumps(value, ensure_ascii=False) if name == "payload" else value, bill_id),
            )

    def due_red_forms(self, now: float) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM red_forms WHERE due_at <= ? AND red_order_no IS NULL"
            " AND status IN ('15', '01', '04', '02', '03')",
            (now,),
        ).fetchall()
        return [dict(r) for r in rows]

    def red_form_by_no(self, bill_no: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM red_forms WHERE bill_no = ?", (bill_no,)).fetchone()
        return None if row is None else dict(row)

    def red_forms_since(self, since: float, until: float) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM red_forms WHERE created_at >= ? AND created_at < ?"
            " ORDER BY created_at, bill_id",
            (since, until),
        ).fetchall()
        return [dict(r) for r in rows]

    def next_buyer_bill_id(self) -> str:
        return f"B{self._next('buyer_bill'):017d}"

    def issued_gross(self, seller_tax: str) -> Decimal:
        """Gross of the blue invoices accepted for `seller_tax` (what its credit covers)."""
        rows = self._db.execute(
            "SELECT gross FROM orders WHERE kind = 'BLUE' AND status != '22'"
            " AND json_extract(payload, '$.salerTaxNum') = ?",
            (seller_tax,),
        ).fetchall()
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    # --- request log --------------------------------------------------------------------

    def log_request(
        self,
        *,
        ts: float,
        method: str | None,
        path: str,
        app_key: str | None,
        status: int,
        code: str | None,
        serial: str | None,
        fault: str | None,
        user_tax: str | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO requests(ts, method, path, app_key, status, code, serial, fault,"
            " user_tax) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, method, path, app_key, status, code, serial, fault, user_tax),
        )

    def requests(self, since_id: int, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM requests WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
        ).fetchall()
        return [dict(r) for r in rows]
