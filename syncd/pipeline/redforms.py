"""Red-letter forms raised by buyers: discovery, the seller's decision, the red invoice.

The daemon polls the platform's list of forms waiting for us on its own thread
(`RedFormPoller`), off the hot path of change events: forms are rare and their deadline is
days, so a poll a minute costs nothing and a slow platform never delays an invoice.

Exactly-once rests on the ledger (`syncd.ledger.redforms`): a form is recorded once (by its
id), decided once (a conditional update from PENDING, in the transaction that writes the
audit row and the ERP outcome), and its red invoice is recorded once (a conditional update
that only matches a confirmed form without one). The platform call comes *before* the
ledger's decision and is idempotent on the platform: if the process dies in between, the
same command repeated (or the next poll, which sees the form decided) finishes the job
without a second decision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Connection, Engine, text

from syncd.config import SyncdConfig
from syncd.erp.redforms import write_outcome
from syncd.issuers.redforms import (
    BuyerRedForm,
    BuyerRedForms,
    FormRefused,
    FormsUnavailable,
)
from syncd.ledger import audit
from syncd.ledger import redforms as ledger
from syncd.ledger.models import Operator
from syncd.ledger.redforms import FormRow
from syncd.observability.metrics import Metrics

log = logging.getLogger("syncd.redforms")

POLLER_ACTOR = "syncd:red-forms"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Decision:
    """What `decide` did. `kind`:
    - `decided`: the platform and the ledger now hold the decision;
    - `already`: the same decision was made before -- nothing changed;
    - `refused`: the form cannot take this decision (decided otherwise, expired);
    - `not_found`: no such form in the ledger;
    - `unavailable`: the platform did not answer; nothing changed, try again."""

    kind: Literal["decided", "already", "refused", "not_found", "unavailable"]
    message: str
    row: FormRow | None = None
    code: str | None = None


@dataclass
class PollReport:
    listed: int = 0
    discovered: list[FormRow] = field(default_factory=list)
    issued: list[FormRow] = field(default_factory=list)
    closed: list[FormRow] = field(default_factory=list)
    unavailable: str | None = None


class RedFormDesk:
    """The one place that changes buyer-raised forms: used by the poller and the command."""

    def __init__(
        self,
        engine: Engine,
        issuer: BuyerRedForms,
        config: SyncdConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.engine = engine
        self.issuer = issuer
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.provider = issuer.provider

    # --- writing one change -----------------------------------------------------------

    def _write_back(self, conn: Connection, row: FormRow) -> None:
        wb = self.config.red_forms.write_back
        if wb is not None:
            write_outcome(conn, wb, row)

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.red_forms.labels(outcome=outcome).inc(n)

    def _finish_issued(self, conn: Connection, row: FormRow, form: BuyerRedForm) -> FormRow | None:
        """Record the red invoice of a confirmed form (once), audit it, write it back."""
        if form.red_invoice_no is None:
            return None
        issued_at = ledger.parse_when(form.red_issued_at)
        done = ledger.record_red_invoice(conn, row.id, form.red_invoice_no, issued_at, self.clock())
        if done is None:
            return None
        audit.append(
            conn,
            [
                {
                    "document_id": done.document_id,
                    "from_state": None,
                    "to_state": None,
                    "reason": "red invoice issued for a buyer's red-letter form",
                    "actor": POLLER_ACTOR,
                    "details": {
                        "form_id": done.form_id,
                        "provider": done.provider,
                        "original_invoice_no": done.original_invoice_no,
                        "red_invoice_no": done.red_invoice_no,
                    },
                }
            ],
        )
        self._write_back(conn, done)
        return done

    # --- the operator's decision --------------------------------------------------------

    def decide(self, form_id: str, *, confirm: bool, operator: Operator, actor: str) -> Decision:
        verb = "confirmed" if confirm else "rejected"
        with self.engine.begin() as conn:
            row = ledger.find(conn, self.provider, form_id)
        if row is None:
            return Decision("not_found", f"no buyer red-letter form {form_id} in the ledger")
        same = {"CONFIRMED", "ISSUED"} if confirm else {"REJECTED"}
        if row.status in same:
            return Decision(
                "already",
                f"form {form_id} was already {verb} ({row.decided_at or 'on the platform'}"
                f"{', by ' + row.decided_by if row.decided_by else ''}); nothing changed",
                row,
            )
        if row.status != "PENDING":
            return Decision(
                "refused",
                f"form {form_id} is {row.status}; it cannot be {verb} any more",
                row,
                code="FORM_DECIDED" if row.status != "EXPIRED" else "FORM_EXPIRED",
            )
        answer = self.issuer.decide_buyer_red_form(form_id, confirm=confirm, reason=operator.why)
        if isinstance(answer, FormsUnavailable):
            return Decision(
                "unavailable",
                f"the e-invoice platform did not take the decision ({answer.reason}); "
                "nothing changed, try again",
                row,
                code=answer.reason.code,
            )
        if isinstance(answer, FormRefused):
            closed = None
            if answer.code == "FORM_EXPIRED":
                with self.engine.begin() as conn:
                    closed = ledger.mark(conn, row.id, "EXPIRED", now=self.clock())
                    if closed is not None:
                        self._write_back(conn, closed)
            return Decision(
                "refused",
                f"the platform refused: [{answer.code}] {answer.message}",
                closed or row,
                code=answer.code,
            )
        with self.engine.begin() as conn:
            db_user = conn.execute(text("SELECT current_user")).scalar_one()
            decided_by = f"{operator.os_user} (database role {db_user})"
            done = ledger.decide(
                conn,
                row.id,
                confirm=confirm,
                decided_by=decided_by,
                why=operator.why,
                now=self.clock(),
            )
            if done is None:  # another operator (or the poller) got there first
                current = ledger.find(conn, self.provider, form_id)
                return Decision(
                    "already",
                    f"form {form_id} was decided meanwhile ({current.status if current else '?'})"
                    "; nothing changed",
                    current,
                )
            audit.append(
                conn,
                [
                    {
                        "document_id": done.document_id,
                        "from_state": None,
                        "to_state": None,
                        "reason": f"buyer red-letter form {verb}",
                        "actor": actor,
                        "details": {
                            "form_id": done.form_id,
                            "provider": done.provider,
                            "original_invoice_no": done.original_invoice_no,
                            "decision": "confirm" if confirm else "reject",
                            "platform_already": answer.already,
                        },
                    }
                ],
                operator=operator,
            )
            self._write_back(conn, done)
            if confirm and answer.form.status == "ISSUED":
                done = self._finish_issued(conn, done, answer.form) or done
        return Decision("decided", f"form {form_id} {verb}", done)

    # --- the daemon's poll --------------------------------------------------------------

    def poll_once(self) -> PollReport:
        """List the forms waiting for us, record new ones, follow up on the ledger's open
        ones (expired, decided elsewhere, red invoice issued), refresh the gauges."""
        report = PollReport()
        listed = self.issuer.list_buyer_red_forms()
        if isinstance(listed, FormsUnavailable):
            report.unavailable = str(listed.reason)
            log.warning("listing buyer red-letter forms failed: %s", listed.reason)
        else:
            report.listed = len(listed)
            with self.engine.begin() as conn:
                report.discovered = ledger.record_discovered(
                    conn, self.provider, listed, now=self.clock()
                )
                for row in report.discovered:
                    audit.append(
                        conn,
                        [
                            {
                                "document_id": row.document_id,
                                "from_state": None,
                                "to_state": None,
                                "reason": "buyer raised a red-letter form",
                                "actor": POLLER_ACTOR,
                                "details": {
                                    "form_id": row.form_id,
                                    "provider": row.provider,
                                    "original_invoice_no": row.original_invoice_no,
                                    "deadline": row.deadline.isoformat(),
                                },
                            }
                        ],
                    )
                    self._write_back(conn, row)
            self._count("discovered", len(report.discovered))
            for row in report.discovered:
                log.warning(
                    "buyer raised red-letter form %s against invoice %s; decide before %s "
                    "(syncd red-forms confirm|reject)",
                    row.form_id,
                    row.original_invoice_no,
                    row.deadline.isoformat(),
                )
            waiting = {f.form_id for f in listed}
            self._follow_up(report, waiting)
        self.refresh_gauges()
        return report

    def _follow_up(self, report: PollReport, waiting: set[str]) -> None:
        with self.engine.begin() as conn:
            open_rows = ledger.listing(
                conn, statuses=("PENDING", "CONFIRMED"), provider=self.provider
            )
        for row in open_rows:
            if row.status == "PENDING" and row.form_id in waiting:
                continue
            form = self.issuer.buyer_red_form(row.form_id)
            if not isinstance(form, BuyerRedForm):
                continue  # unavailable: the next poll asks again
            with self.engine.begin() as conn:
                if row.status == "PENDING" and form.status != "PENDING":
                    # decided in the platform's own UI, or expired
                    status = "CONFIRMED" if form.status == "ISSUED" else form.status
                    closed = ledger.mark(conn, row.id, status, now=self.clock())
                    if closed is not None:
                        self._write_back(conn, closed)
                        report.closed.append(closed)
                        self._count("expired" if status == "EXPIRED" else "decided_elsewhere")
                        row = closed
                if row.status == "CONFIRMED" and form.status == "ISSUED":
                    done = self._finish_issued(conn, row, form)
                    if done is not None:
                        report.issued.append(done)
                        self._count("issued")

    def refresh_gauges(self) -> None:
        if self.metrics is None:
            return
        with self.engine.begin() as conn:
            count, earliest = ledger.pending_summary(conn)
        self.metrics.red_forms_pending.set(count)
        self.metrics.red_forms_next_deadline.set(earliest.timestamp() if earliest else 0)


class RedFormPoller:
    """`RedFormDesk.poll_once` every `red_forms.poll_interval_seconds` on a daemon thread.

    A failing poll (database or platform down) is logged and retried at the next tick; it
    never stops the daemon."""

    def __init__(self, desk: RedFormDesk, interval: float) -> None:
        self.desk = desk
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="syncd-red-forms", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.desk.poll_once()
            except Exception as exc:  # a dependency outage: log one line, try next tick
                log.warning("red-letter form poll failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.interval)


def start_poller(
    engine: Engine, issuer: object, config: SyncdConfig, metrics: Metrics | None
) -> RedFormPoller | None:
    """The daemon's poller, started; None when discovery is off or the provider has no
    buyer-raised forms."""
    interval = config.red_forms.poll_interval_seconds
    if interval <= 0 or not isinstance(issuer, BuyerRedForms):
        return None
    poller = RedFormPoller(RedFormDesk(engine, issuer, config, metrics=metrics), interval)
    poller.start()
    log.info("polling buyer red-letter forms every %.0f s", interval)
    return poller


__all__ = [
    "POLLER_ACTOR",
    "Decision",
    "PollReport",
    "RedFormDesk",
    "RedFormPoller",
    "start_poller",
]
