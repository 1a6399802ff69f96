"""Demo load for the demo ERP schema (config/demo/erp.sql): orders in, an honest tally out.

`build_orders` (pure, seeded) plans realistic sales orders: 1-4 lines of real-looking goods
and services with 19-digit tax classification codes, rates 13/9/6 %, both price bases, some
discounted lines, a share with an invalid buyer tax ID on a SPECIAL invoice, a share to be
cancelled once invoiced, a share to be cancelled and confirmed again (a re-issue: a red
invoice, then a second blue one) and a share whose first line is returned in parts that add
up to the whole line (partial red invoices). `DemoRun` (I/O) writes them into the ERP
exactly as a user would -- DRAFT first, CONFIRMED in a separate transaction -- cancels the
chosen ones once their invoice is written back (and confirms the re-issued ones again once
the reversal is), records the planned returns, confirms the buyer side of red-letter forms
on the sandbox, and finally checks the result against the ERP *and* the sandbox platform's
audit: every expected invoice exists exactly once, nothing is issued twice, nothing is
missing.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, TextIO

import httpx
from sqlalchemy import Engine, bindparam, create_engine, func, select, text

from syncd.config import DocumentConfig, SyncdConfig
from syncd.errors import OperatorError
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.ledger.engine import ledger_engine, normalise_url
from syncd.ledger.models import canonical_json
from syncd.ledger.schema import documents

ORDER_TABLE: Final = "erp.sales_order"
LINE_TABLE: Final = "erp.sales_order_line"
CENT: Final = Decimal("0.01")
#: Revisions checked when mapping sandbox serials back to orders (a rejected order that is
#: corrected is re-issued under revision + 1).
MAX_REVISION: Final = 3

_USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_ORG_WEIGHTS: Final = (3, 7, 9, 10, 5, 8, 4, 2)
_REGIONS: Final = ("110105", "310115", "440305", "330106", "320506", "510107", "420106")

CANCEL_REASONS: Final = ("RETURN", "ERROR", "STOPPED", "ALLOWANCE")


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    tax_code: str
    spec: str | None
    unit: str
    rate: Decimal
    low: Decimal
    high: Decimal
    fractional: bool = False


# Goods at 13 %, farm produce / transport at 9 %, modern services at 6 %.
CATALOGUE: Final = (
    Item(
        "Stainless steel hex bolt M8x40",
        "1080421010000000000",
        "M8x40 A2-70",
        "box",
        Decimal("0.13"),
        Decimal("18.50"),
        Decimal("46.00"),
    ),
    Item(
        "Ergonomic office chair",
        "1050201990000000000",
        "Mesh back, black",
        "pcs",
        Decimal("0.13"),
        Decimal("399.00"),
        Decimal("1299.00"),
    ),
    Item(
        "A4 copy paper 80 g",
        "1060407020000000000",
        "500 sheets/ream",
        "ream",
        Decimal("0.13"),
        Decimal("21.90"),
        Decimal("32.50"),
    ),
    Item(
        "Laptop computer 14-inch",
        "1090511010000000000",
        "i5/16GB/512GB",
        "pcs",
        Decimal("0.13"),
        Decimal("4299.00"),
        Decimal("7999.00"),
    ),
    Item(
        "LED panel light 36 W",
        "1090416010000000000",
        "600x600 mm",
        "pcs",
        Decimal("0.13"),
        Decimal("88.00"),
        Decimal("156.00"),
    ),
    Item(
        "Copper cable 2.5 mm2",
        "1080304020000000000",
        "BV 2.5",
        "m",
        Decimal("0.13"),
        Decimal("2.35"),
        Decimal("4.80"),
        fractional=True,
    ),
    Item(
        "Fresh whole milk 1 L",
        "1030203010000000000",
        "1 L carton",
        "box",
        Decimal("0.09"),
        Decimal("9.80"),
        Decimal("16.50"),
    ),
    Item(
        "Soybean oil 5 L",
        "1030212010000000000",
        "5 L bottle",
        "btl",
        Decimal("0.09"),
        Decimal("58.00"),
        Decimal("89.00"),
    ),
    Item(
        "Japonica rice",
        "1010101020000000000",
        None,
        "kg",
        Decimal("0.09"),
        Decimal("4.20"),
        Decimal("7.60"),
        fractional=True,
    ),
    Item(
        "Road freight Shanghai-Suzhou",
        "3010102020100000000",
        None,
        "trip",
        Decimal("0.09"),
        Decimal("650.00"),
        Decimal("1800.00"),
    ),
    Item(
        "IT consulting",
        "3040802020000000000",
        None,
        "hour",
        Decimal("0.06"),
        Decimal("380.00"),
        Decimal("980.00"),
        fractional=True,
    ),
    Item(
        "Software maintenance (annual)",
        "3040201030000000000",
        "Standard tier",
        "year",
        Decimal("0.06"),
        Decimal("6800.00"),
        Decimal("24000.00"),
    ),
    Item(
        "Technical training",
        "3070201020000000000",
        "2-day course",
        "person",
        Decimal("0.06"),
        Decimal("1200.00"),
        Decimal("3600.00"),
    ),
)

BUYERS: Final = (
    (
        "Shanghai Hongda Electronics Co., Ltd.",
        "88 Zhangjiang Rd, Pudong, Shanghai",
        "021-5080 1234",
        "ICBC Zhangjiang Branch",
        "1001 2345 6789 0123",
    ),
    (
        "Beijing Yuanfang Technology Co., Ltd.",
        "12 Zhongguancun St, Haidian, Beijing",
        "010-6275 8899",
        "Bank of Beijing Haidian Branch",
        "2000 1122 3344 5566",
    ),
    (
        "Shenzhen Nanshan Logistics Co., Ltd.",
        "5 Keyuan Rd, Nanshan, Shenzhen",
        "0755-8666 2020",
        "China Merchants Bank Nanshan",
        "7559 0011 2233 4455",
    ),
    (
        "Hangzhou Xihu Trading Co., Ltd.",
        "301 Wensan Rd, Xihu, Hangzhou",
        "0571-8788 6655",
        "Bank of Hangzhou Xihu Branch",
        "3301 0400 1111 2222",
    ),
    (
        "Suzhou Industrial Park Machinery Co., Ltd.",
        "18 Xinghu St, SIP, Suzhou",
        "0512-6288 7766",
        "Bank of Suzhou SIP Branch",
        "5120 3344 5566 7788",
    ),
    (
        "Chengdu Tianfu Foods Co., Ltd.",
        "66 Tianfu Ave, Wuhou, Chengdu",
        "028-8555 3311",
        "Agricultural Bank Tianfu Branch",
        "2288 6677 1100 9922",
    ),
    (
        "Wuhan Guanggu Optics Co., Ltd.",
        "9 Guanshan Rd, Hongshan, Wuhan",
        "027-8777 4545",
        "China Construction Bank Guanggu",
        "4200 1501 8800 1234",
    ),
    (
        "Guangzhou Pearl River Hotels Ltd.",
        "200 Yuexiu Rd, Yuexiu, Guangzhou",
        "020-8333 1212",
        "Bank of China Yuexiu Branch",
        "6640 2233 4455 6677",
    ),
)


@dataclass(frozen=True, slots=True)
class DemoLine:
    line_no: int
    item_name: str
    tax_code: str
    spec: str | None
    unit: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal
    discount_amount: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class DemoOrder:
    index: int
    order_no: str
    buyer_name: str
    buyer_tax_id: str
    buyer_address: str
    buyer_phone: str
    buyer_bank_name: str
    buyer_bank_account: str
    buyer_email: str | None
    invoice_type: str  # SPECIAL | ORDINARY
    price_includes_tax: bool
    lines: tuple[DemoLine, ...]
    total_amount: Decimal
    #: planned with an invalid buyer tax ID: syncd or the platform must refuse it
    invalid: bool
    #: cancel once invoiced, with this reason
    cancel_reason: str | None
    #: confirm again once the reversal is written back: a second blue invoice (revision 1)
    reissue: bool = False
    #: units of line 1 returned once invoiced, one return row each (they add up to the line)
    returns: tuple[Decimal, ...] = ()


def order_prefix(seed: int) -> str:
    return f"DEMO-{seed}-"


def order_no(seed: int, index: int) -> str:
    return f"{order_prefix(seed)}{index:05d}"


def _uscc_check(first17: str) -> str:
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def _org_code(rng: random.Random) -> str:
    body = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    total = sum(_ORG_ALPHABET.index(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return body + ("X" if check == 10 else "0" if check == 11 else str(check))


def valid_uscc(rng: random.Random) -> str:
    """A well-formed unified social credit code (enterprise, real region codes)."""
    first17 = "91" + rng.choice(_REGIONS) + _org_code(rng)
    return first17 + _uscc_check(first17)


def invalid_uscc(rng: random.Random) -> str:
    """A USCC with a wrong check character (what a typo in the ERP looks like)."""
    good = valid_uscc(rng)
    wrong = [c for c in _USCC_ALPHABET if c != good[-1]]
    return good[:-1] + rng.choice(wrong)


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _line(rng: random.Random, line_no: int, item: Item, discounted: bool) -> DemoLine:
    if item.fractional:
        quantity = Decimal(rng.randint(5, 400)) / Decimal(4)  # quarter units: 1.25, 37.5 ...
    elif item.high > 1000:  # laptops and annual contracts come in ones and twos
        quantity = Decimal(rng.randint(1, 5))
    else:
        quantity = Decimal(rng.randint(1, 40))
    span = int((item.high - item.low) / CENT)
    unit_price = item.low + CENT * rng.randint(0, span)
    amount = _money(quantity * unit_price)
    discount = Decimal(0)
    if discounted:
        discount = _money(amount * Decimal(rng.randint(2, 15)) / Decimal(100))
        if discount >= amount or discount <= 0:
            discount = Decimal(0)
    return DemoLine(
        line_no,
        item.name,
        item.tax_code,
        item.spec,
        item.unit,
        quantity,
        unit_price,
        item.rate,
        discount,
        amount,
    )


def build_orders(
    count: int,
    *,
    seed: int,
    invalid_ratio: float = 0.05,
    cancel_ratio: float = 0.1,
    return_ratio: float = 0.0,
    reissue_ratio: float = 0.0,
) -> list[DemoOrder]:
    """The orders of one demo run; the same arguments always give the same orders.

    `reissue_ratio` and `return_ratio` are shares of the valid orders, taken from those not
    cancelled; returns go to ORDINARY orders whose first line has no discount (a discounted
    line is returned by cancelling the whole document)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    for name, ratio in (
        ("invalid_ratio", invalid_ratio),
        ("cancel_ratio", cancel_ratio),
        ("return_ratio", return_ratio),
        ("reissue_ratio", reissue_ratio),
    ):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {ratio}")
    rng = random.Random(seed)  # noqa: S311 -- demo data, not security
    indices = list(range(1, count + 1))
    invalid = set(rng.sample(indices, round(count * invalid_ratio)))
    valid = [i for i in indices if i not in invalid]
    cancel = set(rng.sample(valid, round(len(valid) * cancel_ratio)))
    buyer_ids = [valid_uscc(rng) for _ in BUYERS]
    orders: list[DemoOrder] = []
    for i in indices:
        b = rng.randrange(len(BUYERS))
        name, address, phone, bank, account = BUYERS[b]
        is_invalid = i in invalid
        invoice_type = "SPECIAL" if is_invalid or rng.random() < 0.4 else "ORDINARY"
        items = rng.sample(CATALOGUE, rng.randint(1, 4))
        lines = tuple(
            _line(rng, n, item, rng.random() < 0.2) for n, item in enumerate(items, start=1)
        )
        orders.append(
            DemoOrder(
                index=i,
                order_no=order_no(seed, i),
                buyer_name=name,
                buyer_tax_id=invalid_uscc(rng) if is_invalid else buyer_ids[b],
                buyer_address=address,
                buyer_phone=phone,
                buyer_bank_name=bank,
                buyer_bank_account=account,
                buyer_email=f"ap{b}@example.com" if rng.random() < 0.5 else None,
                invoice_type=invoice_type,
                price_includes_tax=rng.random() < 0.5,
                lines=lines,
                total_amount=sum((ln.amount - ln.discount_amount for ln in lines), Decimal(0)),
                invalid=is_invalid,
                cancel_reason=rng.choice(CANCEL_REASONS) if i in cancel else None,
            )
        )
    if return_ratio or reissue_ratio:
        orders = _plan_corrections(orders, len(valid), seed, return_ratio, reissue_ratio)
    return orders


def _plan_corrections(
    orders: list[DemoOrder], valid: int, seed: int, return_ratio: float, reissue_ratio: float
) -> list[DemoOrder]:
    """Re-issues and returns, drawn from their own seeded dice (so that the rest of the
    plan stays what the same seed gave before)."""
    rng = random.Random(f"{seed}:corrections")  # noqa: S311 -- demo data, not security
    plain = [o.index for o in orders if not o.invalid and o.cancel_reason is None]
    reissue = set(rng.sample(plain, min(round(valid * reissue_ratio), len(plain))))
    eligible = [
        o.index
        for o in orders
        if o.index in plain
        and o.index not in reissue
        and o.invoice_type == "ORDINARY"
        and o.lines[0].discount_amount == 0
    ]
    returned = set(rng.sample(eligible, min(round(valid * return_ratio), len(eligible))))
    out: list[DemoOrder] = []
    for o in orders:
        if o.index in reissue:
            o = replace(o, reissue=True, cancel_reason=rng.choice(CANCEL_REASONS))
        elif o.index in returned:
            units = o.lines[0].quantity
            parts = (Decimal(1), units - 1) if units >= 2 else (units,)
            o = replace(o, returns=parts)
        out.append(o)
    return out


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Progress:
    created: int = 0
    issued: int = 0
    reversed: int = 0
    invalid: int = 0
    rejected: int = 0
    cancelled: int = 0
    returned: int = 0
    reissued: int = 0

    def line(self, total: int, elapsed: float) -> str:
        return (
            f"[demo] {elapsed:5.0f} s  created {self.created}/{total}  issued {self.issued}"
            f"  reversed {self.reversed}/{self.cancelled} cancelled  invalid "
            f"{self.invalid}  rejected {self.rejected}"
            + (f"  returns {self.returned}" if self.returned else "")
            + (f"  re-issued {self.reissued}" if self.reissued else "")
        )


@dataclass(slots=True)
class Summary:
    orders: int
    prefix: str
    issued: int = 0
    reversed: int = 0
    invalid: int = 0
    rejected: int = 0
    dead: int = 0
    cancelled: int = 0
    #: partial red invoices (return rows reversed), of `returns` return rows recorded
    partial_reversals: int = 0
    returns: int = 0
    #: orders cancelled, reversed and confirmed again with a second blue invoice
    reissued: int = 0
    #: order_no -> what is missing (no write-back, or not at the platform)
    missing: dict[str, str] = field(default_factory=dict)
    #: serials / orders the platform issued more than once
    duplicates: list[str] = field(default_factory=list)
    #: outcomes the plan did not expect (e.g. an order planned invalid got issued)
    unexpected: dict[str, str] = field(default_factory=dict)
    documents: int = 0
    seconds: float | None = None
    documents_per_second: float | None = None
    timed_out: bool = False
    #: why the platform's audit could not be read (then nothing can be verified)
    audit_error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected or self.audit_error)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def render(self) -> str:
        rate = (
            f"{self.documents_per_second:.1f} documents/s ({self.documents} documents in "
            f"{self.seconds:.1f} s, first confirm -> last write-back)"
            if self.documents_per_second is not None
            else "n/a"
        )
        out = [
            f"[demo] summary for {self.orders} orders {self.prefix}*",
            f"  issued {self.issued}  full reversals {self.reversed} (of {self.cancelled} "
            f"cancelled)  partial reversals {self.partial_reversals} (of {self.returns} "
            f"returns)  re-issues {self.reissued}",
            f"  invalid {self.invalid}  rejected {self.rejected}  dead {self.dead}",
            f"  duplicates at the platform: {len(self.duplicates)}"
            + (f" ({', '.join(self.duplicates[:5])})" if self.duplicates else ""),
            f"  missing: {len(self.missing)}"
            + "".join(f"\n    {k}: {v}" for k, v in list(self.missing.items())[:10]),
            f"  unexpected: {len(self.unexpected)}"
            + "".join(f"\n    {k}: {v}" for k, v in list(self.unexpected.items())[:10]),
            f"  throughput: {rate}",
            *([f"  platform audit unavailable: {self.audit_error}"] if self.audit_error else []),
            "  result: OK"
            if self.ok
            else ("  result: FAILED" + (" (timed out waiting)" if self.timed_out else "")),
        ]
        return "\n".join(out) + "\n"


class DemoSetupError(OperatorError, RuntimeError):
    """The config or the database is not the demo schema, or the run would collide."""


def demo_document(config: SyncdConfig) -> DocumentConfig:
    for doc in config.documents.values():
        if doc.table == ORDER_TABLE and doc.lines.table == LINE_TABLE:
            return doc
    raise DemoSetupError(
        f"no document type of the config reads {ORDER_TABLE} with lines {LINE_TABLE}: "
        "`syncd demo` needs the demo schema (config/demo/erp.sql, config/demo.yaml)"
    )


@dataclass(slots=True)
class _ReturnRow:
    id: int
    order_no: str
    invoice_status: str | None
    red_invoice_no: str | None


@dataclass(slots=True)
class _Row:
    id: int
    order_no: str
    status: str
    invoice_status: str | None
    invoice_no: str | None
    red_invoice_no: str | None
    invoice_type: str


class DemoRun:
    """One `syncd demo generate` run against the configured ERP database and platform."""

    def __init__(
        self,
        config: SyncdConfig,
        orders: Sequence[DemoOrder],
        *,
        prefix: str,
        rate: float = 0.0,
        timeout: float = 300.0,
        out: TextIO = sys.stdout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._doc = demo_document(config)
        self._orders = list(orders)
        self._by_no = {o.order_no: o for o in self._orders}
        self._prefix = prefix
        self._rate = rate
        self._timeout = timeout
        self._out = out
        self._clock = clock
        self._tty = out.isatty()
        self._engine: Engine = create_engine(
            normalise_url(config.database.dsn_value()), pool_size=2, max_overflow=0
        )
        self._status = config.documents[self._doc.name].write_back.status_values
        self._ids: dict[str, int] = {}
        self._cancelled: set[str] = set()
        self._confirmed_red: set[str] = set()
        self._reconfirmed: set[str] = set()
        self._returned: set[str] = set()
        if any(o.returns for o in self._orders) and self._doc.returns is None:
            raise DemoSetupError(
                f"--return-ratio needs documents.{self._doc.name}.returns in the config "
                "(config/demo.yaml has it)"
            )
        if any(o.reissue for o in self._orders) and self._doc.reissues is None:
            raise DemoSetupError(
                f"--reissue-ratio needs documents.{self._doc.name}.reissues in the config "
                "(config/demo.yaml has it)"
            )
        self._progress = Progress()
        self._started = 0.0
        self._last_print = 0.0
        self._first_confirm_wall: float | None = None

    # ------------------------------------------------------------------ public

    def run(self) -> Summary:
        try:
            self._check_fresh()
            self._started = self._clock()
            self._create_all()
            deadline = self._clock() + self._timeout
            timed_out = False
            while not self._tick():
                if self._clock() > deadline:
                    timed_out = True
                    break
                time.sleep(0.5)
            self._print(force=True)
            if self._tty:
                self._out.write("\n")
            summary = self._summarise()
            summary.timed_out = timed_out
            return summary
        finally:
            self._engine.dispose()

    # ------------------------------------------------------------------ creating

    def _check_fresh(self) -> None:
        with self._engine.connect() as conn:
            n = conn.execute(
                text(f"SELECT count(*) FROM {ORDER_TABLE} WHERE order_no LIKE :p"),  # noqa: S608
                {"p": self._prefix + "%"},
            ).scalar_one()
        if n:
            raise DemoSetupError(
                f"{n} orders {self._prefix}* already exist; run with another --seed"
            )

    def _create_all(self) -> None:
        for n, order in enumerate(self._orders):
            if self._rate > 0:
                due = self._started + n / self._rate
                while (now := self._clock()) < due:
                    time.sleep(min(due - now, 0.2))
                    self._maybe_tick()
            self._create(order)
            self._progress.created += 1
            self._maybe_tick()

    def _create(self, order: DemoOrder) -> None:
        with self._engine.begin() as conn:  # the clerk saves a draft ...
            order_id = conn.execute(
                text(
                    f"INSERT INTO {ORDER_TABLE} (order_no, status, invoice_type,"  # noqa: S608
                    " price_includes_tax, buyer_name, buyer_tax_id, buyer_address, buyer_phone,"
                    " buyer_bank_name, buyer_bank_account, buyer_email, total_amount, remark)"
                    " VALUES (:order_no, 'DRAFT', :invoice_type, :pit, :name, :tax_id, :address,"
                    " :phone, :bank, :account, :email, :total, :remark) RETURNING id"
                ),
                {
                    "order_no": order.order_no,
                    "invoice_type": order.invoice_type,
                    "pit": order.price_includes_tax,
                    "name": order.buyer_name,
                    "tax_id": order.buyer_tax_id,
                    "address": order.buyer_address,
                    "phone": order.buyer_phone,
                    "bank": order.buyer_bank_name,
                    "account": order.buyer_bank_account,
                    "email": order.buyer_email,
                    "total": order.total_amount,
                    "remark": "syncd demo order",
                },
            ).scalar_one()
            conn.execute(
                text(
                    f"INSERT INTO {LINE_TABLE} (order_id, line_no, item_name, tax_code, spec,"  # noqa: S608
                    " unit, quantity, unit_price, tax_rate, discount_amount, amount) VALUES"
                    " (:order_id, :line_no, :item_name, :tax_code, :spec, :unit, :quantity,"
                    " :unit_price, :tax_rate, :discount_amount, :amount)"
                ),
                [{"order_id": order_id, **asdict(ln)} for ln in order.lines],
            )
        with self._engine.begin() as conn:  # ... and confirms it later
            conn.execute(
                text(
                    f"UPDATE {ORDER_TABLE} SET status = 'CONFIRMED',"  # noqa: S608
                    " updated_at = localtimestamp WHERE id = :id AND status = 'DRAFT'"
                ),
                {"id": order_id},
            )
        if self._first_confirm_wall is None:
            self._first_confirm_wall = time.time()
        self._ids[order.order_no] = int(order_id)

    # ------------------------------------------------------------------ watching

    def _maybe_tick(self) -> None:
        if self._clock() - self._last_print >= 1.0:
            self._tick()

    def _rows(self) -> list[_Row]:
        with self._engine.connect() as conn:
            result = conn.execute(
                text(
                    "SELECT id, order_no, status::text, invoice_status, invoice_no,"  # noqa: S608
                    f" red_invoice_no, invoice_type FROM {ORDER_TABLE}"
                    " WHERE order_no LIKE :p"
                ),
                {"p": self._prefix + "%"},
            )
            return [_Row(*r) for r in result]

    def _tick(self) -> bool:
        """Refresh progress, cancel / confirm what is due; True when every order settled."""
        sv = self._status
        rows = self._rows()
        p = self._progress
        p.issued = sum(1 for r in rows if r.invoice_no is not None)
        p.reversed = sum(1 for r in rows if r.invoice_status == sv.reversed)
        p.invalid = sum(1 for r in rows if r.invoice_status == sv.invalid)
        p.rejected = sum(1 for r in rows if r.invoice_status == sv.rejected)
        to_cancel = [
            r
            for r in rows
            if r.order_no not in self._cancelled
            and r.status == "CONFIRMED"
            and r.invoice_status == sv.issued
            and self._planned(r.order_no).cancel_reason is not None
        ]
        for r in to_cancel:
            self._cancel(r)
        for r in rows:
            plan = self._planned(r.order_no)
            if plan.returns and r.invoice_status == sv.issued and r.order_no not in self._returned:
                self._return(r, plan.returns)
            elif (
                plan.reissue
                and r.order_no in self._cancelled
                and r.order_no not in self._reconfirmed
                and r.status == "CANCELLED"
                and r.invoice_status == sv.reversed
            ):
                self._reconfirm(r)
        returns = self._return_rows()
        rsv = self._doc.returns.status_values if self._doc.returns is not None else sv
        p.returned = sum(1 for rr in returns if rr.invoice_status == rsv.reversed)
        p.reissued = sum(
            1 for r in rows if r.order_no in self._reconfirmed and r.invoice_status == sv.issued
        )
        for r in rows:
            if (
                r.status == "CANCELLED"
                and r.invoice_type == "SPECIAL"
                and r.invoice_status != sv.reversed
                and r.order_no not in self._confirmed_red
            ):
                self._confirm_red_form(r)
        p.cancelled = len(self._cancelled)
        self._print()
        if p.created < len(self._orders):
            return False
        settled = {sv.invalid, sv.rejected, sv.dead, sv.reversed}
        failed = {sv.invalid, sv.rejected, sv.dead}
        open_returns = {
            rr.order_no
            for rr in returns
            if rr.invoice_status not in (rsv.reversed, rsv.invalid, rsv.rejected, rsv.dead)
        }
        for r in rows:
            plan = self._planned(r.order_no)
            if plan.reissue:
                done = r.invoice_status in failed or (
                    r.order_no in self._reconfirmed and r.invoice_status == sv.issued
                )
            elif plan.returns:
                done = r.invoice_status in failed or (
                    r.order_no in self._returned and r.order_no not in open_returns
                )
            else:
                done = r.invoice_status in settled or (
                    r.invoice_status == sv.issued and plan.cancel_reason is None
                )
            if not done:
                return False
        return len(rows) == len(self._orders)

    def _planned(self, order_no: str) -> DemoOrder:
        return self._by_no[order_no]

    def _cancel(self, row: _Row) -> None:
        reason = self._planned(row.order_no).cancel_reason
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {ORDER_TABLE} SET status = 'CANCELLED', cancel_reason = :reason,"  # noqa: S608
                    " updated_at = localtimestamp WHERE id = :id AND status = 'CONFIRMED'"
                ),
                {"id": row.id, "reason": reason},
            )
        self._cancelled.add(row.order_no)

    def _reconfirm(self, row: _Row) -> None:
        """The corrected order is confirmed again: the next revision, a second blue invoice."""
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE {ORDER_TABLE} SET status = 'CONFIRMED',"  # noqa: S608
                    " remark = 'syncd demo order, corrected',"
                    " updated_at = localtimestamp WHERE id = :id AND status = 'CANCELLED'"
                ),
                {"id": row.id},
            )
        self._reconfirmed.add(row.order_no)

    def _return(self, row: _Row, parts: tuple[Decimal, ...]) -> None:
        """The buyer sends units of line 1 back: one return row per part, each saved as a
        draft and confirmed (each its own document, a partial red invoice)."""
        returns = self._doc.returns
        assert returns is not None
        for quantity in parts:
            with self._engine.begin() as conn:
                return_id = conn.execute(
                    text(
                        f"INSERT INTO {returns.table} (order_id, line_no, quantity, reason)"  # noqa: S608
                        " VALUES (:o, 1, :q, 'RETURN') RETURNING id"
                    ),
                    {"o": row.id, "q": quantity},
                ).scalar_one()
            with self._engine.begin() as conn:
                conn.execute(
                    text(
                        f"UPDATE {returns.table} SET status = 'CONFIRMED'"  # noqa: S608
                        " WHERE id = :id AND status = 'DRAFT'"
                    ),
                    {"id": return_id},
                )
        self._returned.add(row.order_no)

    def _return_rows(self) -> list[_ReturnRow]:
        returns = self._doc.returns
        if returns is None or not self._returned:
            return []
        with self._engine.connect() as conn:
            result = conn.execute(
                text(
                    "SELECT r.id, o.order_no, r.invoice_status, r.red_invoice_no"  # noqa: S608
                    f" FROM {returns.table} r JOIN {ORDER_TABLE} o ON o.id = r.order_id"
                    " WHERE o.order_no LIKE :p ORDER BY r.id"
                ),
                {"p": self._prefix + "%"},
            )
            return [_ReturnRow(*r) for r in result]

    def _return_serial(self, return_id: int) -> str:
        returns = self._doc.returns
        assert returns is not None
        return serial_for(
            DocumentIdentity.of(
                self._doc.name,
                returns.table,
                [(returns.key_columns[0], return_id)],
                DocumentKind.REVERSAL,
                0,
            )
        )

    def _confirm_red_form(self, row: _Row) -> None:
        # A SPECIAL invoice's red-letter form waits for the buyer; the demo plays the buyer.
        serial = self._serial(row.id, DocumentKind.REVERSAL, 0)
        try:
            response = httpx.post(
                f"{self._config.primary_issuer.base_url.rstrip('/')}/_sandbox/red-forms/{serial}/confirm",
                timeout=5.0,
            )
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            self._confirmed_red.add(row.order_no)

    def _print(self, *, force: bool = False) -> None:
        now = self._clock()
        interval = 1.0 if self._tty else 5.0
        if not force and now - self._last_print < interval:
            return
        self._last_print = now
        line = self._progress.line(len(self._orders), now - self._started)
        if self._tty:
            self._out.write("\r\x1b[2K" + line)
        else:
            self._out.write(line + "\n")
        self._out.flush()

    # ------------------------------------------------------------------ checking

    def _serial(self, order_id: int, kind: DocumentKind, revision: int) -> str:
        doc = self._doc
        return serial_for(
            DocumentIdentity.of(
                doc.name, doc.table, [(doc.key_columns[0], order_id)], kind, revision
            )
        )

    def _summarise(self) -> Summary:
        sv = self._status
        rows = {r.order_no: r for r in self._rows()}
        s = Summary(orders=len(self._orders), prefix=self._prefix, cancelled=len(self._cancelled))
        return_rows: dict[str, list[_ReturnRow]] = {}
        for rr in self._return_rows():
            return_rows.setdefault(rr.order_no, []).append(rr)
        s.returns = sum(len(v) for v in return_rows.values())
        try:
            audit = self._platform_audit()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            s.audit_error = f"GET {self._audit_url()}: {type(exc).__name__}: {exc}"
            audit = []
        by_serial: dict[str, list[dict[str, Any]]] = {}
        for inv in audit:
            by_serial.setdefault(str(inv["serial"]), []).append(inv)
        for order in self._orders:
            r = rows.get(order.order_no)
            if r is None:
                s.missing[order.order_no] = "not in the ERP (creation failed)"
                continue
            blue = [
                inv
                for rev in range(MAX_REVISION + 1)
                for inv in by_serial.get(self._serial(r.id, DocumentKind.ISSUE, rev), [])
            ]
            red = [
                inv
                for rev in range(MAX_REVISION + 1)
                for inv in by_serial.get(self._serial(r.id, DocumentKind.REVERSAL, rev), [])
            ]
            for kind, k in ((DocumentKind.ISSUE, "blue"), (DocumentKind.REVERSAL, "red")):
                for rev in range(MAX_REVISION + 1):
                    n = len(by_serial.get(self._serial(r.id, kind, rev), []))
                    if n > 1:
                        s.duplicates.append(f"{order.order_no}: {n} {k} invoices of revision {rev}")
            if order.reissue:
                self._check_reissue(s, order, r, blue, red)
                continue
            if len(blue) > 1:
                s.duplicates.append(
                    f"{order.order_no}: {len(blue)} blue invoices "
                    f"({', '.join(str(b['invoice_no']) for b in blue)})"
                )
            if len(red) > 1:
                s.duplicates.append(f"{order.order_no}: {len(red)} red invoices")
            status = r.invoice_status
            s.issued += r.invoice_no is not None
            s.reversed += status == sv.reversed
            s.invalid += status == sv.invalid
            s.rejected += status == sv.rejected
            s.dead += status == sv.dead
            if order.invalid:
                if blue:
                    s.unexpected[order.order_no] = (
                        f"planned with an invalid buyer tax ID, yet issued {blue[0]['invoice_no']}"
                    )
                elif status not in (sv.invalid, sv.rejected):
                    s.missing[order.order_no] = f"not refused yet (ERP status {status})"
                continue
            if r.invoice_no is None:
                s.missing[order.order_no] = f"no invoice written back (ERP status {status})"
            elif not blue:
                s.missing[order.order_no] = f"invoice {r.invoice_no} unknown to the platform"
            elif blue[0]["invoice_no"] != r.invoice_no:
                s.unexpected[order.order_no] = (
                    f"ERP shows {r.invoice_no}, the platform issued {blue[0]['invoice_no']}"
                )
            if order.cancel_reason is not None and order.order_no in self._cancelled:
                if status != sv.reversed or r.red_invoice_no is None:
                    s.missing[order.order_no] = f"reversal not written back (ERP status {status})"
                elif not red:
                    s.missing[order.order_no] = (
                        f"red invoice {r.red_invoice_no} unknown to the platform"
                    )
            elif red:
                s.unexpected[order.order_no] = "reversed although never cancelled"
            elif order.cancel_reason is not None and r.invoice_no is not None:
                s.missing[order.order_no] = "invoiced but the demo never cancelled it"
            if order.returns:
                self._check_returns(s, order, r, return_rows.get(order.order_no, []), by_serial)
            elif return_rows.get(order.order_no):
                s.unexpected[order.order_no] = "returns recorded although none was planned"
        counts = Counter(inv["serial"] for inv in audit)
        ours = {
            self._serial(r.id, kind, rev)
            for r in rows.values()
            for kind in DocumentKind
            for rev in range(MAX_REVISION + 1)
        }
        ours |= {self._return_serial(rr.id) for v in return_rows.values() for rr in v}
        s.duplicates += [
            f"serial {serial} issued {n} times"
            for serial, n in counts.items()
            if n > 1 and serial in ours
        ]
        self._throughput(s, [r.id for r in rows.values()])
        return s

    def _check_reissue(
        self,
        s: Summary,
        order: DemoOrder,
        r: _Row,
        blue: list[dict[str, Any]],
        red: list[dict[str, Any]],
    ) -> None:
        """Cancelled, reversed, confirmed again: exactly one red invoice (of revision 0)
        and exactly two blue ones, the ERP showing the second."""
        s.issued += r.invoice_no is not None
        if len(blue) > 2:
            s.duplicates.append(f"{order.order_no}: {len(blue)} blue invoices")
        if order.order_no not in self._reconfirmed:
            s.missing[order.order_no] = f"never re-confirmed (ERP status {r.invoice_status})"
        elif r.invoice_status != self._status.issued or r.invoice_no is None:
            s.missing[order.order_no] = f"re-issue not written back (ERP {r.invoice_status})"
        elif len(blue) < 2:
            s.missing[order.order_no] = "no second blue invoice at the platform"
        elif not red:
            s.missing[order.order_no] = "the first invoice's red invoice is unknown to the platform"
        elif blue[-1]["invoice_no"] != r.invoice_no:
            s.unexpected[order.order_no] = (
                f"ERP shows {r.invoice_no}, the platform's latest blue is {blue[-1]['invoice_no']}"
            )
        elif red[0]["original_invoice_no"] != blue[0]["invoice_no"]:
            s.unexpected[order.order_no] = "the red invoice reverses another invoice"
        else:
            s.reversed += 1
            s.reissued += 1

    def _check_returns(
        self,
        s: Summary,
        order: DemoOrder,
        r: _Row,
        rows: list[_ReturnRow],
        by_serial: dict[str, list[dict[str, Any]]],
    ) -> None:
        """Each planned return: exactly one partial red invoice against the order's blue
        invoice, its number written back to the return row."""
        if r.invoice_no is None:
            return  # the order itself is reported above
        if order.order_no not in self._returned or len(rows) != len(order.returns):
            s.missing[order.order_no] = (
                f"{len(rows)} of {len(order.returns)} planned returns recorded"
            )
            return
        returns = self._doc.returns
        assert returns is not None
        rsv = returns.status_values
        for rr in rows:
            reds = by_serial.get(self._return_serial(rr.id), [])
            what = f"{order.order_no} return {rr.id}"
            if len(reds) > 1:
                s.duplicates.append(f"{what}: {len(reds)} red invoices")
            if rr.invoice_status != rsv.reversed or rr.red_invoice_no is None:
                s.missing[what] = f"partial red invoice not written back ({rr.invoice_status})"
            elif not reds:
                s.missing[what] = f"red invoice {rr.red_invoice_no} unknown to the platform"
            elif reds[0]["invoice_no"] != rr.red_invoice_no:
                s.unexpected[what] = (
                    f"return shows {rr.red_invoice_no}, the platform issued {reds[0]['invoice_no']}"
                )
            elif reds[0]["original_invoice_no"] != r.invoice_no:
                s.unexpected[what] = "the partial red invoice reverses another invoice"
            else:
                s.partial_reversals += 1

    def _audit_url(self) -> str:
        return f"{self._config.primary_issuer.base_url.rstrip('/')}/_sandbox/invoices"

    def _platform_audit(self) -> list[dict[str, Any]]:
        response = httpx.get(self._audit_url(), timeout=30.0)
        response.raise_for_status()
        return list(response.json()["invoices"])

    def _throughput(self, s: Summary, ids: list[int]) -> None:
        if not ids or self._first_confirm_wall is None:
            return
        doc = self._doc
        keys = [canonical_json({doc.key_columns[0]: i}) for i in ids]
        engine = ledger_engine(
            self._config.database.dsn_value(),
            self._config.database.schema_name,
            pool_size=1,
            max_overflow=0,
        )
        try:
            with engine.connect() as conn:
                q = select(func.count(), func.max(documents.c.updated_at)).where(
                    documents.c.document_type == doc.name,
                    documents.c.source_table == doc.table,
                    documents.c.source_key.in_(bindparam("keys", expanding=True)),
                    documents.c.state.in_(["ISSUED", "REVERSED", "INVALID", "REJECTED", "DEAD"]),
                )
                count, last = conn.execute(q, {"keys": keys}).one()
        finally:
            engine.dispose()
        if not count or not isinstance(last, datetime):
            return
        seconds = last.timestamp() - self._first_confirm_wall
        s.documents = int(count)
        if seconds > 0:
            s.seconds = round(seconds, 2)
            s.documents_per_second = round(count / seconds, 2)
