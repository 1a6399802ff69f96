"""The sandbox platform's durable state: one SQLite file (WAL).

Everything the platform ever accepted, issued or was asked is here, so the
sandbox survives its own restart and can referee exactly-once claims after the
fact. The store is used from the server's single event-loop thread only;
every public method is one short transaction.

WAL with `synchronous=NORMAL` survives a kill of the sandbox process (what the
crash tests do); a power cut may lose the last transactions, which is
acceptable for a test platform and keeps it fast.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

from syncd_sandbox import fastjson
from syncd_sandbox.rules import (
    RedFormLimits,
    ReturnedUnits,
    Violation,
    check_red_form_limits,
    check_returnable,
    negate_amount,
    partial_red_lines,
    totals_of,
)

BEIJING: Final = timezone(timedelta(hours=8), "CST")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS invoices (
    serial TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                 -- BLUE | RED
    invoice_type TEXT NOT NULL,         -- SPECIAL | ORDINARY
    payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    status TEXT NOT NULL,               -- PROCESSING | ISSUED | FAILED
    app_key TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    invoice_no TEXT,
    issued_at TEXT,
    check_code TEXT,
    net_amount TEXT NOT NULL,
    tax_amount TEXT NOT NULL,
    gross_amount TEXT NOT NULL,
    original_invoice_no TEXT,
    red_invoice_no TEXT,
    failure_code TEXT,
    failure_reason TEXT
);
-- partial indexes: an accepted invoice touches neither until it matters
CREATE INDEX IF NOT EXISTS invoices_due ON invoices (due_at) WHERE status = 'PROCESSING';
CREATE UNIQUE INDEX IF NOT EXISTS invoices_no ON invoices (invoice_no)
    WHERE invoice_no IS NOT NULL;
CREATE TABLE IF NOT EXISTS red_forms (
    serial TEXT PRIMARY KEY,
    original_invoice_no TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    status TEXT NOT NULL,               -- PENDING_CONFIRMATION | PROCESSING | ISSUED | FAILED
    app_key TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    confirmed_at REAL,
    due_at REAL,
    red_invoice_no TEXT,
    failure_code TEXT,
    failure_reason TEXT
);
-- one live full reversal per blue invoice, enforced by the database itself (partial
-- forms, `lines` set, are checked against the blue lines by `submit_red_form`)
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,              -- never deleted, so ids only grow
    ts REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    app_key TEXT,
    status INTEGER NOT NULL,
    code TEXT,
    serial TEXT,
    fault TEXT,
    duration_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT NOT NULL,
    app_key TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (app_key, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces (seen_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Failure codes after which re-submitting the same serial re-queues the invoice.
RETRYABLE_ISSUE_FAILURES: Final = frozenset({"SEAL_FAILED"})

#: A form waits for the buyer (raised by the seller) or for the seller (raised by the buyer).
WAITING_STATUSES: Final = frozenset({"PENDING_CONFIRMATION", "PENDING_SELLER"})

SubmitKind = Literal["ACCEPTED", "SAME", "REQUEUED", "CONFLICT", "DUPLICATE"]


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    kind: SubmitKind
    row: dict[str, Any]


def canonical_json(payload: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the stored text and the input of the hash.

    Exactly `json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
    (stores written before keep matching), computed by orjson where that is the same.
    """
    return fastjson.canonical(payload)


def payload_digest(payload: Mapping[str, Any], canonical: str | None = None) -> str:
    """Digest of the *parsed* payload, so key order and whitespace are not "different"."""
    text = canonical_json(payload) if canonical is None else canonical
    return hashlib.sha256(text.encode()).hexdigest()


class Store:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._migrate_red_form_lines()
        self._migrate_buyer_forms()
        self._migrate_listing()

    def _migrate_red_form_lines(self) -> None:
        """Partial red forms: the `lines` column, and the one-live-reversal index limited
        to full forms (a store written before partial forms existed is upgraded)."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(red_forms)")}
        if "lines" not in columns:
            self._db.execute("ALTER TABLE red_forms ADD COLUMN lines TEXT")
        self._db.execute("DROP INDEX IF EXISTS red_forms_once")
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS red_forms_full_once ON red_forms "
            "(original_invoice_no) WHERE status != 'FAILED' AND lines IS NULL"
        )

    def _migrate_buyer_forms(self) -> None:
        """Forms raised by the buyer: who raised a form, and why the seller decided so."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(red_forms)")}
        if "raised_by" not in columns:
            self._db.execute(
                "ALTER TABLE red_forms ADD COLUMN raised_by TEXT NOT NULL DEFAULT 'SELLER'"
            )
        if "decision_reason" not in columns:
            self._db.execute("ALTER TABLE red_forms ADD COLUMN decision_reason TEXT")

    def _migrate_listing(self) -> None:
        """The invoice list: `portal` (issued by hand, no serial of a client), `forgotten`
        (the platform no longer answers for the serial: the horizon fault) and an index
        by issue time (a store written before the list existed is upgraded)."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(invoices)")}
        for name in ("portal", "forgotten"):
            if name not in columns:
                self._db.execute(
                    f"ALTER TABLE invoices ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"
                )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS invoices_issued ON invoices (issued_at)"
            " WHERE status = 'ISSUED'"
        )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Everything one request does (nonce, effect, request log), all or nothing.

        Units run inside a shared *group* transaction that `commit()` ends: the
        server commits once per event-loop turn for all requests that finished
        their work in that turn (group commit), and answers none of them before
        that commit. A failing unit is rolled back to its savepoint alone.
        """
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("SAVEPOINT unit")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO unit")
            self._db.execute("RELEASE unit")
            raise
        self._db.execute("RELEASE unit")

    def commit(self) -> None:
        """Make every finished unit durable (no-op when nothing is pending)."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._db.in_transaction:  # joined into the current unit's transaction
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- requests and nonces ---------------------------------------------------------

    def remember_nonce(self, app_key: str, nonce: str, now: float, ttl: float) -> bool:
        """False when the nonce was already used by this key within `ttl` seconds.

        One statement (autocommit): an insert, or a refresh of an expired entry;
        a live entry makes it change nothing, which is the replay.
        """
        cursor = self._db.execute(
            "INSERT INTO nonces (nonce, app_key, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (app_key, nonce) DO UPDATE SET seen_at = excluded.seen_at"
            " WHERE nonces.seen_at <= ?",
            (nonce, app_key, now, now - ttl),
        )
        return cursor.rowcount == 1

    def prune_nonces(self, before: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM nonces WHERE seen_at < ?", (before,))

    def log_request(
        self,
        *,
        ts: float,
        method: str,
        path: str,
        app_key: str | None,
        status: int,
        code: str | None,
        serial: str | None,
        fault: str | None,
        duration_ms: float,
    ) -> None:
        self._db.execute(
            "INSERT INTO requests (ts, method, path, app_key, status, code, serial, fault,"
            " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, method, path, app_key, status, code, serial, fault, duration_ms),
        )

    def requests(self, since_id: int, limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM requests WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
        ).fetchall()
        return [dict(r) for r in rows]

    # --- blue invoices --------------------------------------------------------------

    def submit_invoice(
        self,
        payload: Mapping[str, Any],
        *,
        app_key: str,
        now: float,
        delay: float,
        refuse_duplicates: bool,
    ) -> SubmitOutcome:
        serial = str(payload["serial"])
        canonical = canonical_json(payload)
        digest = payload_digest(payload, canonical)
        with self._tx() as db:
            row = db.execute("SELECT * FROM invoices WHERE serial = ?", (serial,)).fetchone()
            if (
                row is None
                and db.execute("SELECT 1 FROM red_forms WHERE serial = ?", (serial,)).fetchone()
            ):
                return SubmitOutcome("CONFLICT", {"serial": serial})
            if row is not None:
                existing = dict(row)
                same = existing["payload_hash"] == digest
                if (
                    same
                    and existing["status"] == "FAILED"
                    and existing["failure_code"] in RETRYABLE_ISSUE_FAILURES
                ):
                    db.execute(
                        "UPDATE invoices SET status = 'PROCESSING', due_at = ?,"
                        " attempts = attempts + 1, failure_code = NULL, failure_reason = NULL"
                        " WHERE serial = ?",
                        (now + delay, serial),
                    )
                    return SubmitOutcome("REQUEUED", self._invoice(db, serial))
                if refuse_duplicates:
                    return SubmitOutcome("DUPLICATE", existing)
                return SubmitOutcome("SAME" if same else "CONFLICT", existing)
            net, tax, gross = totals_of(payload)
            row = db.execute(
                "INSERT INTO invoices (serial, kind, invoice_type, payload, payload_hash, status,"
                " app_key, accepted_at, due_at, net_amount, tax_amount, gross_amount)"
                " VALUES (?, 'BLUE', ?, ?, ?, 'PROCESSING', ?, ?, ?, ?, ?, ?) RETURNING *",
                (
                    serial,
                    payload["invoice_type"],
                    canonical,
                    digest,
                    app_key,
                    now,
                    now + delay,
                    net,
                    tax,
                    gross,
                ),
            ).fetchall()[0]
            return SubmitOutcome("ACCEPTED", dict(row))

    def invoice(self, serial: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM invoices WHERE serial = ?", (serial,)).fetchone()
        return None if row is None else dict(row)

    def invoice_by_no(self, invoice_no: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT * FROM invoices WHERE invoice_no = ?", (invoice_no,)
        ).fetchone()
        return None if row is None else dict(row)

    @staticmethod
    def _invoice(db: sqlite3.Connection, serial: str) -> dict[str, Any]:
        return dict(db.execute("SELECT * FROM invoices WHERE serial = ?", (serial,)).fetchone())

    def issue_due(self, now: float, fail: Callable[[], bool], serial: str | None = None) -> int:
        """Issue (or fail) every accepted invoice whose delay has passed; returns how many."""
        done = 0
        with self._tx() as db:
            sql = "SELECT serial FROM invoices WHERE status = 'PROCESSING' AND due_at <= ?"
            args: tuple[Any, ...] = (now,)
            if serial is not None:
                sql += " AND serial = ?"
                args = (now, serial)
            else:  # a backlog (e.g. after a restart) is worked off in slices, not one stall
                sql += " ORDER BY due_at LIMIT 500"
            for (due_serial,) in db.execute(sql, args).fetchall():
                if fail():
                    db.execute(
                        "UPDATE invoices SET status = 'FAILED', failure_code = 'SEAL_FAILED',"
                        " failure_reason = 'the electronic seal service failed; resubmit the"
                        " same serial' WHERE serial = ?",
                        (due_serial,),
                    )
                else:
                    self._issue(db, due_serial, now)
                done += 1
            if serial is None or not done:
                done += self._issue_due_red_forms(db, now, serial)
        return done

    def _next_invoice_no(self, db: sqlite3.Connection, now: float) -> str:
        ((seq,),) = db.execute(
            "INSERT INTO counters (name, value) VALUES ('invoice_no', 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchall()
        year = datetime.fromtimestamp(now, BEIJING).year % 100
        return f"{year:02d}312000{seq:012d}"  # 20 digits: year, region 31 (Shanghai), sequence

    def _issue(self, db: sqlite3.Connection, serial: str, now: float) -> dict[str, Any]:
        invoice_no = self._next_invoice_no(db, now)
        check = int(hashlib.sha256(f"{invoice_no}:{serial}".encode()).hexdigest(), 16)
        (row,) = db.execute(
            "UPDATE invoices SET status = 'ISSUED', invoice_no = ?, issued_at = ?, check_code = ?"
            " WHERE serial = ? RETURNING *",
            (invoice_no, _iso(now), f"{check % 10**20:020d}", serial),
        ).fetchall()
        return dict(row)

    def finish_due_invoice(
        self, row: Mapping[str, Any], now: float, fail: Callable[[], bool]
    ) -> dict[str, Any]:
        """Issue (or fail) one accepted invoice the caller just read as due; the new row.

        For the query path: the caller's read and this write share the request's
        transaction, so the row cannot have changed in between.
        """
        assert row["status"] == "PROCESSING" and row["due_at"] <= now
        with self._tx() as db:
            if not fail():
                return self._issue(db, row["serial"], now)
            (failed,) = db.execute(
                "UPDATE invoices SET status = 'FAILED', failure_code = 'SEAL_FAILED',"
                " failure_reason = 'the electronic seal service failed; resubmit the"
                " same serial' WHERE serial = ? RETURNING *",
                (row["serial"],),
            ).fetchall()
            return dict(failed)

    # --- red-letter forms -------------------------------------------------------------

    def submit_red_form(
        self,
        serial: str,
        original_invoice_no: str,
        reason: str,
        *,
        app_key: str,
        now: float,
        delay: float,
        ttl: float,
        refuse_duplicates: bool,
        lines: list[tuple[int, Decimal]] | None = None,
        limits: RedFormLimits | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """(outcome, row) where outcome is ACCEPTED, SAME, CONFLICT, DUPLICATE,
        ORIGINAL_NOT_FOUND, NOT_REVERSIBLE, ALREADY_REVERSED, EXCEEDS_ORIGINAL or
        LIMIT_EXCEEDED (the last two: the row carries `violations`).

        `lines`: a partial form returning those units of those blue lines; the units of
        all live forms of a line never exceed it, and a full form is refused once any
        partial one is live."""
        form: dict[str, Any] = {
            "serial": serial,
            "original_invoice_no": original_invoice_no,
            "reason": reason,
        }
        lines_json = None
        if lines:
            lines_json = json.dumps([[n, str(q)] for n, q in lines])
            form["lines"] = [{"line_no": n, "quantity": str(q)} for n, q in lines]
        digest = payload_digest(form)
        with self._tx() as db:
            row = db.execute("SELECT * FROM red_forms WHERE serial = ?", (serial,)).fetchone()
            if row is not None:
                existing = self._red_view(db, dict(row), now)
                if refuse_duplicates:
                    return "DUPLICATE", existing
                return ("SAME" if existing["payload_hash"] == digest else "CONFLICT"), existing
            if db.execute("SELECT 1 FROM invoices WHERE serial = ?", (serial,)).fetchone():
                return "CONFLICT", {"serial": serial}
            blue = db.execute(
                "SELECT * FROM invoices WHERE invoice_no = ?", (original_invoice_no,)
            ).fetchone()
            if blue is None:
                return "ORIGINAL_NOT_FOUND", {"serial": serial}
            if blue["kind"] != "BLUE" or blue["status"] != "ISSUED":
                return "NOT_REVERSIBLE", {"serial": serial}
            self._expire_red_forms(db, now)
            live_forms = db.execute(
                "SELECT * FROM red_forms WHERE original_invoice_no = ? AND status != 'FAILED'",
                (original_invoice_no,),
            ).fetchall()
            full = [dict(f) for f in live_forms if f["lines"] is None]
            if full:
                return "ALREADY_REVERSED", full[0]
            if limits is not None:
                issued_at = datetime.fromisoformat(blue["issued_at"]) if blue["issued_at"] else None
                over = check_red_form_limits(
                    limits,
                    issued_at=issued_at,
                    live_forms=len(live_forms),
                    now=datetime.fromtimestamp(now, UTC),
                )
                if over:
                    return "LIMIT_EXCEEDED", {"serial": serial, "violations": over}
            if live_forms and not lines:
                return "EXCEEDS_ORIGINAL", {
                    "serial": serial,
                    "violations": [
                        Violation(
                            "EXCEEDS_ORIGINAL",
                            "original_invoice_no",
                            f"{len(live_forms)} partial red form(s) exist; a full reversal "
                            "would exceed the original",
                        )
                    ],
                }
            if lines:
                before: dict[int, Decimal] = {}
                for f in live_forms:
                    for n, q in json.loads(f["lines"]):
                        before[int(n)] = before.get(int(n), Decimal(0)) + Decimal(q)
                problems = check_returnable(json.loads(blue["payload"]), lines, before)
                if problems:
                    return "EXCEEDS_ORIGINAL", {"serial": serial, "violations": problems}
            needs_confirmation = blue["invoice_type"] == "SPECIAL"
            db.execute(
                "INSERT INTO red_forms (serial, original_invoice_no, reason, payload_hash, status,"
                " app_key, created_at, expires_at, confirmed_at, due_at, lines)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    serial,
                    original_invoice_no,
                    reason,
                    digest,
                    "PENDING_CONFIRMATION" if needs_confirmation else "PROCESSING",
                    app_key,
                    now,
                    now + ttl,
                    None if needs_confirmation else now,
                    None if needs_confirmation else now + delay,
                    lines_json,
                ),
            )
            return "ACCEPTED", self._red(db, serial)

    def red_form(self, serial: str, now: float) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM red_forms WHERE serial = ?", (serial,)).fetchone()
        return None if row is None else self._red_view(self._db, dict(row), now)

    def decide_red_form(
        self, serial: str, *, confirm: bool, now: float, delay: float
    ) -> dict[str, Any] | None:
        """The buyer's answer to a pending form (simulated by the test control plane)."""
        with self._tx() as db:
            self._expire_red_forms(db, now)
            row = db.execute("SELECT * FROM red_forms WHERE serial = ?", (serial,)).fetchone()
            if row is None:
                return None
            if row["status"] == "PENDING_CONFIRMATION":
                if confirm:
                    db.execute(
                        "UPDATE red_forms SET status = 'PROCESSING', confirmed_at = ?, due_at = ?"
                        " WHERE serial = ?",
                        (now, now + delay, serial),
                    )
                else:
                    db.execute(
                        "UPDATE red_forms SET status = 'FAILED', failure_code = 'BUYER_REJECTED',"
                        " failure_reason = 'the buyer rejected the red-letter form'"
                        " WHERE serial = ?",
                        (serial,),
                    )
            return self._red(db, serial)

    @staticmethod
    def _red(db: sqlite3.Connection, serial: str) -> dict[str, Any]:
        return dict(db.execute("SELECT * FROM red_forms WHERE serial = ?", (serial,)).fetchone())

    @staticmethod
    def _red_view(db: sqlite3.Connection, row: dict[str, Any], now: float) -> dict[str, Any]:
        if row["status"] in WAITING_STATUSES and row["expires_at"] <= now:
            row = {
                **row,
                "status": "FAILED",
                "failure_code": "CONFIRMATION_EXPIRED",
                "failure_reason": "the buyer did not confirm the red-letter form in time",
            }
        return row

    @staticmethod
    def _expire_red_forms(db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "UPDATE red_forms SET status = 'FAILED', failure_code = 'CONFIRMATION_EXPIRED',"
            " failure_reason = 'the buyer did not confirm the red-letter form in time'"
            " WHERE status IN ('PENDING_CONFIRMATION', 'PENDING_SELLER') AND expires_at <= ?",
            (now,),
        )

    def _issue_due_red_forms(self, db: sqlite3.Connection, now: float, serial: str | None) -> int:
        self._expire_red_forms(db, now)
        sql = "SELECT * FROM red_forms WHERE status = 'PROCESSING' AND due_at <= ?"
        args: tuple[Any, ...] = (now,)
        if serial is not None:
            sql += " AND serial = ?"
            args = (now, serial)
        done = 0
        for form in db.execute(sql, args).fetchall():
            blue = db.execute(
                "SELECT * FROM invoices WHERE invoice_no = ?", (form["original_invoice_no"],)
            ).fetchone()
            blue_payload = json.loads(blue["payload"])
            red_payload: dict[str, Any] = {
                "serial": form["serial"],
                "kind": "RED",
                "original_invoice_no": form["original_invoice_no"],
                "reversal_reason": form["reason"],
                "blue": blue_payload,
            }
            amounts = (
                negate_amount(blue["net_amount"]),
                negate_amount(blue["tax_amount"]),
                negate_amount(blue["gross_amount"]),
            )
            if form["lines"] is not None:
                returned = [(int(n), Decimal(q)) for n, q in json.loads(form["lines"])]
                red_lines = partial_red_lines(
                    blue_payload, returned, self._returned_amounts(db, blue["invoice_no"])
                )
                red_payload["lines"] = red_lines
                amounts = tuple(  # type: ignore[assignment]
                    str(sum((Decimal(str(x[k])) for x in red_lines), Decimal(0)))
                    for k in ("net_amount", "tax_amount", "gross_amount")
                )
            db.execute(
                "INSERT INTO invoices (serial, kind, invoice_type, payload, payload_hash, status,"
                " app_key, accepted_at, due_at, net_amount, tax_amount, gross_amount,"
                " original_invoice_no) VALUES (?, 'RED', ?, ?, ?, 'PROCESSING', ?, ?, ?, ?, ?, ?,"
                " ?)",
                (
                    form["serial"],
                    blue["invoice_type"],
                    json.dumps(red_payload, ensure_ascii=False),
                    form["payload_hash"],
                    form["app_key"],
                    form["created_at"],
                    now,
                    *amounts,
                    form["original_invoice_no"],
                ),
            )
            self._issue(db, form["serial"], now)
            red_no = self._invoice(db, form["serial"])["invoice_no"]
            db.execute(
                "UPDATE red_forms SET status = 'ISSUED', red_invoice_no = ? WHERE serial = ?",
                (red_no, form["serial"]),
            )
            if form["lines"] is None:  # a partial red leaves the blue invoice standing
                db.execute(
                    "UPDATE invoices SET red_invoice_no = ? WHERE invoice_no = ?",
                    (red_no, form["original_invoice_no"]),
                )
            done += 1
        return done

    @staticmethod
    def _returned_amounts(db: sqlite3.Connection, blue_no: str) -> dict[int, ReturnedUnits]:
        """What the issued partial reds of `blue_no` returned, per blue line."""
        out: dict[int, ReturnedUnits] = {}
        for row in db.execute(
            "SELECT payload FROM invoices WHERE kind = 'RED' AND original_invoice_no = ?"
            " AND status = 'ISSUED'",
            (blue_no,),
        ):
            for line in json.loads(row["payload"]).get("lines") or ():
                n = int(line["line_no"])
                prior = out.get(n, ReturnedUnits())
                out[n] = ReturnedUnits(
                    prior.quantity - Decimal(line["quantity"]),
                    prior.net - Decimal(line["net_amount"]),
                    prior.tax - Decimal(line["tax_amount"]),
                    prior.gross - Decimal(line["gross_amount"]),
                )
        return out

    # --- red-letter forms raised by the buyer -----------------------------------------

    def raise_buyer_form(
        self, original_invoice_no: str, reason: str, *, now: float, ttl: float
    ) -> tuple[str, dict[str, Any]]:
        """The buyer raises a red-confirmation form against an issued blue invoice (the
        control plane simulates the buyer). (outcome, row): ACCEPTED, ORIGINAL_NOT_FOUND,
        NOT_REVERSIBLE or ALREADY_REVERSED (the row is then the live form)."""
        with self._tx() as db:
            blue = db.execute(
                "SELECT * FROM invoices WHERE invoice_no = ?", (original_invoice_no,)
            ).fetchone()
            if blue is None:
                return "ORIGINAL_NOT_FOUND", {}
            if blue["kind"] != "BLUE" or blue["status"] != "ISSUED":
                return "NOT_REVERSIBLE", {}
            self._expire_red_forms(db, now)
            live = db.execute(
                "SELECT * FROM red_forms WHERE original_invoice_no = ? AND status != 'FAILED'",
                (original_invoice_no,),
            ).fetchone()
            if live is not None:
                return "ALREADY_REVERSED", dict(live)
            ((seq,),) = db.execute(
                "INSERT INTO counters (name, value) VALUES ('buyer_form', 1)"
                " ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
            ).fetchall()
            form_id = f"BF{seq:014d}"
            form = {
                "form_id": form_id,
                "original_invoice_no": original_invoice_no,
                "reason": reason,
            }
            db.execute(
                "INSERT INTO red_forms (serial, original_invoice_no, reason, payload_hash, status,"
                " app_key, created_at, expires_at, raised_by)"
                " VALUES (?, ?, ?, ?, 'PENDING_SELLER', ?, ?, ?, 'BUYER')",
                (
                    form_id,
                    original_invoice_no,
                    reason,
                    payload_digest(form),
                    blue["app_key"],
                    now,
                    now + ttl,
                ),
            )
            return "ACCEPTED", self._red(db, form_id)

    def buyer_forms(self, app_key: str, now: float) -> list[dict[str, Any]]:
        """The forms buyers raised against `app_key`'s invoices that wait for the seller."""
        with self._tx() as db:
            self._expire_red_forms(db, now)
            rows = db.execute(
                "SELECT * FROM red_forms WHERE raised_by = 'BUYER' AND app_key = ?"
                " AND status = 'PENDING_SELLER' ORDER BY created_at, serial",
                (app_key,),
            ).fetchall()
        return [dict(r) for r in rows]

    def decide_buyer_form(
        self, form_id: str, app_key: str, *, confirm: bool, reason: str, now: float, delay: float
    ) -> tuple[str, dict[str, Any] | None]:
        """The seller's answer to a buyer's form. (outcome, row): DECIDED, SAME (the same
        answer was given before: nothing changes), NOT_FOUND, DECIDED_OTHERWISE (the
        opposite answer was given before) or EXPIRED. A confirmed form becomes a red
        invoice like a seller's form does (`_issue_due_red_forms`)."""
        with self._tx() as db:
            self._expire_red_forms(db, now)
            row = db.execute(
                "SELECT * FROM red_forms WHERE serial = ? AND raised_by = 'BUYER' AND app_key = ?",
                (form_id, app_key),
            ).fetchone()
            if row is None:
                return "NOT_FOUND", None
            status, code = row["status"], row["failure_code"]
            if status == "PENDING_SELLER":
                if confirm:
                    db.execute(
                        "UPDATE red_forms SET status = 'PROCESSING', confirmed_at = ?, due_at = ?,"
                        " decision_reason = ? WHERE serial = ?",
                        (now, now + delay, reason, form_id),
                    )
                else:
                    db.execute(
                        "UPDATE red_forms SET status = 'FAILED', failure_code = 'SELLER_REJECTED',"
                        " failure_reason = 'the seller rejected the red-letter form',"
                        " decision_reason = ? WHERE serial = ?",
                        (reason, form_id),
                    )
                return "DECIDED", self._red(db, form_id)
            if code == "CONFIRMATION_EXPIRED":
                return "EXPIRED", dict(row)
            confirmed = status in ("PROCESSING", "ISSUED")
            rejected = code == "SELLER_REJECTED"
            if (confirm and confirmed) or (not confirm and rejected):
                return "SAME", dict(row)
            return "DECIDED_OTHERWISE", dict(row)

    # --- the invoice list, the portal, forgetting -----------------------------------

    def forget(self, serial: str) -> None:
        """The platform no longer answers queries for `serial` (its request record aged out)."""
        self._db.execute("UPDATE invoices SET forgotten = 1 WHERE serial = ?", (serial,))

    def is_forgotten(self, row: Mapping[str, Any], now: float, after: float | None) -> bool:
        return bool(row.get("forgotten")) or (
            after is not None and float(row["accepted_at"]) <= now - after
        )

    def list_invoices(
        self,
        *,
        seller_tax_id: str,
        issued_from: str,
        issued_to: str,
        buyer_tax_id: str | None,
        gross_amount: Decimal | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page) of issued invoices of one seller issued on the Beijing dates
        `issued_from`..`issued_to` (inclusive), by invoice number (new numbers only grow,
        so paging while invoices are issued never skips one)."""
        seller = "coalesce(json_extract(payload, '$.seller.tax_id'),"
        seller += " json_extract(payload, '$.blue.seller.tax_id'))"
        buyer = "coalesce(json_extract(payload, '$.buyer.tax_id'),"
        buyer += " json_extract(payload, '$.blue.buyer.tax_id'))"
        where = f"status = 'ISSUED' AND issued_at >= ? AND issued_at < ? AND {seller} = ?"
        args: list[Any] = [issued_from, _day_after(issued_to), seller_tax_id]
        if buyer_tax_id is not None:
            where += f" AND {buyer} = ?"
            args.append(buyer_tax_id)
        if gross_amount is not None:  # 2-decimal amounts: a REAL comparison is exact here
            where += " AND abs(CAST(gross_amount AS REAL) - ?) < 0.001"
            args.append(float(gross_amount))
        ((total,),) = self._db.execute(f"SELECT count(*) FROM invoices WHERE {where}", args)  # noqa: S608 - fixed fragments
        rows = self._db.execute(
            f"SELECT * FROM invoices WHERE {where} ORDER BY invoice_no LIMIT ? OFFSET ?",  # noqa: S608
            [*args, limit, offset],
        ).fetchall()
        return int(total), [dict(r) for r in rows]

    def add_portal_invoice(
        self, payload: Mapping[str, Any], *, app_key: str, now: float, issued_at: float
    ) -> dict[str, Any]:
        """An invoice issued by hand in the platform's portal: issued at once, under a
        serial of the platform's own (never listed: no client asked for it)."""
        with self._tx() as db:
            ((seq,),) = db.execute(
                "INSERT INTO counters (name, value) VALUES ('portal', 1)"
                " ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
            ).fetchall()
            serial = f"PORTAL{seq:012d}"
            doc = {**payload, "serial": serial}
            canonical = canonical_json(doc)
            net, tax, gross = totals_of(doc)
            db.execute(
                "INSERT INTO invoices (serial, kind, invoice_type, payload, payload_hash, status,"
                " app_key, accepted_at, due_at, net_amount, tax_amount, gross_amount, portal)"
                " VALUES (?, 'BLUE', ?, ?, ?, 'PROCESSING', ?, ?, ?, ?, ?, ?, 1)",
                (
                    serial,
                    doc["invoice_type"],
                    canonical,
                    payload_digest(doc, canonical),
                    app_key,
                    now,
                    now,
                    net,
                    tax,
                    gross,
                ),
            )
            return self._issue(db, serial, issued_at)

    # --- audit ----------------------------------------------------------------------

    def issued_invoices(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT serial, invoice_no, kind, invoice_type, original_invoice_no, net_amount,"
            " tax_amount, gross_amount, issued_at FROM invoices WHERE status = 'ISSUED'"
            " ORDER BY invoice_no"
        ).fetchall()
        return [dict(r) for r in rows]


def _day_after(day: str) -> str:
    """The ISO date after `day` (a `YYYY-MM-DD` string), for a half-open range on `issued_at`."""
    return (datetime.strptime(day, "%Y-%m-%d").date() + timedelta(days=1)).isoformat()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(BEIJING).isoformat(timespec="seconds")
