"""`syncd preview`: what syncd would do with one change record, without doing it.

The DBA's loop when adding a table: feed a captured record (as `syncd decode`
reads it), see the decision and its reason, and the exact invoice that would be
sent -- lines from the ERP database, or from a file when offline.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from syncd.changes import ChangeEvent, DecodeError, RecordPosition
from syncd.commands import load_config_or_exit
from syncd.commands.decode import MAX_INPUT_BYTES
from syncd.config import DocumentConfig, SyncdConfig
from syncd.debezium.convert import Invalid
from syncd.debezium.records import check_no_lone_surrogates
from syncd.safetext import printable, reason_of, write_utf8

HELP = "decide one change record and print the invoice that would be sent"

_EPILOG = """\
input (--event): one JSON object {"topic", "partition", "offset", "key", "value"} with the
record's key and value documents as on the wire (the `syncd decode` input format).
--lines: a JSON list of line rows (objects keyed by column name) instead of reading them
from the ERP database; numbers may be JSON numbers or strings (read as exact decimals).
--blue: the blue invoice JSON to preview a reversal offline; without it the frozen blue
invoice is read from syncd's ledger in the ERP database.
output: JSON {"decision": {...}, "invoice": {...} | null, "problems": [...]}.
exit codes: 0 ok, 1 the invoice would be INVALID (problems listed), 2 bad input/config or a
record the daemon would dead-letter (one line on stderr says why)."""


class _InputError(Exception):
    pass


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-c", "--config", required=True, help="syncd config YAML")
    parser.add_argument("--event", required=True, metavar="FILE", help="the Kafka record (JSON)")
    parser.add_argument("--lines", metavar="FILE", help="line rows (JSON list) instead of the DB")
    parser.add_argument(
        "--blue", metavar="FILE", help="blue invoice JSON for a reversal (default: from the ledger)"
    )


def _read_json(path: str, what: str) -> Any:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _InputError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise _InputError(f"{what} {path}: larger than {MAX_INPUT_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError as exc:
        raise _InputError(
            f"{what} {path}: not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _InputError(f"{what} {path}: not JSON: {reason_of(exc)}") from None
    try:
        check_no_lone_surrogates(doc, what)
    except Invalid as exc:
        raise _InputError(f"{path}: {exc.message()}") from None
    return doc


def _decode(config: SyncdConfig, path: str) -> Any:
    from syncd.debezium import decode_json
    from syncd.pipeline.classify import decode_options

    record = _read_json(path, "--event")
    fields = {"topic", "partition", "offset", "key", "value"}
    if not isinstance(record, dict) or not fields <= set(record):
        raise _InputError(
            f"--event {path}: expected an object {{topic, partition, offset, key, value}}"
        )
    topic, partition, offset = record["topic"], record["partition"], record["offset"]
    if not isinstance(topic, str) or type(partition) is not int or type(offset) is not int:
        raise _InputError(f"--event {path}: topic must be a string, partition and offset integers")
    position = RecordPosition(topic, partition, offset)
    return decode_json(position, record["key"], record["value"], decode_options(config))


def _lines_from_file(path: str, max_lines: int) -> list[dict[str, Any]]:
    rows = _read_json(path, "--lines")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _InputError(f"--lines {path}: expected a JSON list of objects")
    # one more than the limit is enough for the mapping to say there are too many
    return [{k: _number(v) for k, v in r.items()} for r in rows[: max_lines + 1]]


def _number(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value) if abs(value) < 10**30 else Decimal(10**30)  # out of range
    return value


def _lines_from_db(
    config: SyncdConfig, doc: DocumentConfig, row: dict[str, Any], key: Any, max_lines: int
) -> list[dict[str, Any]]:
    """The lines, as the intake reads them; `row` gets its related values (in place)."""
    import sqlalchemy as sa

    from syncd.erp.lines import load_lines
    from syncd.erp.related import resolve_document

    engine = sa.create_engine(config.database.dsn_value(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            lines = load_lines(connection, doc, key, limit=max_lines + 1)
            if len(lines) <= max_lines:
                row.update(resolve_document(connection, doc, row, lines))
            return lines
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _InputError(
            f"cannot read lines from {config.database.masked_dsn()}: {reason} "
            "(use --lines FILE offline)"
        ) from None
    finally:
        engine.dispose()


def _blue_from_ledger(
    config: SyncdConfig, doc: DocumentConfig, event: ChangeEvent
) -> tuple[Any, str, int] | str:
    """(blue invoice, its number, its revision) from the ledger, or why there is none."""
    import sqlalchemy as sa

    from syncd.identity import DocumentKind
    from syncd.invoice.model import Invoice
    from syncd.ledger import repository as repo
    from syncd.ledger.engine import ledger_engine
    from syncd.rules.decide import identity_of

    base = identity_of(doc, event, DocumentKind.ISSUE, 0)
    engine = ledger_engine(
        config.database.dsn_value(), config.database.schema_name, poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as connection:
            issue = repo.latest_revision(
                connection, base.document_type, base.source_table, base.source_key
            )
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"the ledger is not readable ({reason}); pass --blue FILE"
    finally:
        engine.dispose()
    if issue is None:
        return "no invoice for this document in the ledger: the daemon would ignore the reversal"
    if issue.payload is None or issue.invoice_no is None:
        return (
            f"the ledger's invoice is {issue.state.value}, not issued: the daemon would "
            "reverse it once issued (or ignore it if it fails)"
        )
    blue = Invoice.model_validate(dict(issue.payload))
    return blue, issue.invoice_no, issue.identity.revision


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def preview(args: argparse.Namespace, config: SyncdConfig) -> tuple[dict[str, Any], int]:
    from syncd.identity import serial_for
    from syncd.invoice.from_erp import MappingResult, build_blue, build_red
    from syncd.invoice.model import Invoice
    from syncd.rules.decide import Action, decide_event

    record = _decode(config, args.event)
    if not isinstance(record, ChangeEvent):
        kind = type(record).__name__.lower()
        ignored = {"action": "ignore", "reason": f"{kind}: not a row change"}
        return {"decision": ignored, "invoice": None, "problems": []}, 0
    decision = decide_event(record, config)
    out: dict[str, Any] = {
        "decision": {
            "action": decision.action.value,
            "reason": decision.reason,
            "document": decision.document,
            "table": record.table,
            "op": record.op.value,
            "position": str(record.position),
        },
        "invoice": None,
        "problems": [],
    }
    ident = decision.identity
    if ident is not None:
        out["decision"]["key"] = {k: v for k, v in ident.key}
        out["decision"]["serial"] = serial_for(ident)
    doc = config.documents.get(decision.document or "")
    row = dict(record.after) if record.after is not None else None
    result: MappingResult | None = None
    if decision.action is Action.ISSUE and doc is not None and row is not None and ident:
        assert doc.lines.references is not None
        key = row.get(doc.lines.references)
        max_lines = config.limits.max_lines_per_document
        lines = (
            _lines_from_file(args.lines, max_lines)
            if args.lines
            else _lines_from_db(config, doc, row, key, max_lines)
        )
        result = build_blue(doc, row, lines, ident, max_lines=max_lines)
    elif decision.action is Action.REVERSE and doc is not None and row is not None and ident:
        if args.blue:
            try:
                blue = Invoice.model_validate(_read_json(args.blue, "--blue"))
            except ValueError as exc:
                raise _InputError(f"--blue {args.blue}: not an invoice: {exc}") from None
            original = row.get(doc.write_back.columns.invoice_no)
            if not isinstance(original, str):
                raise _InputError(
                    f"--blue: the row has no invoice number in {doc.write_back.columns.invoice_no}"
                )
            result = build_red(doc, row, blue, original, ident)
        else:
            found = _blue_from_ledger(config, doc, record)
            if isinstance(found, str):
                out["note"] = found
            else:
                blue, original, revision = found
                ident = replace(ident, revision=revision)
                out["decision"]["serial"] = serial_for(ident)
                result = build_red(doc, row, blue, original, ident)
    elif decision.action is Action.CREDIT:
        out["note"] = (
            "a credit note: the daemon reads its lines, finds the credited invoice in the "
            "ledger and sends one red invoice for the credited lines (credit_notes)"
        )
    if decision.action is Action.UNDECIDED:
        return out, 2  # the daemon dead-letters such a record
    if result is not None:
        if result.invoice is not None:
            out["invoice"] = result.invoice.model_dump(mode="json")
        out["problems"] = [
            {"code": p.code, "path": p.path, "message": p.message} for p in result.problems
        ]
        if result.problems:
            return out, 1
    return out, 0


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, "preview")
    try:
        out, code = preview(args, config)
        text = json.dumps(out, indent=2, ensure_ascii=False, default=_json_default)
    except (_InputError, DecodeError) as exc:
        print(f"syncd preview: {printable(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # whatever the record made fail: one line, never a traceback
        print(f"syncd preview: cannot preview {args.event}: {reason_of(exc)}", file=sys.stderr)
        return 2
    write_utf8(sys.stdout, text + "\n")
    if code == 2:
        print(
            f"syncd preview: the daemon would dead-letter this record (undecided): "
            f"{printable(out['decision']['reason'])}",
            file=sys.stderr,
        )
    if code == 1:
        for p in out["problems"]:
            print(
                f"syncd preview: invalid: {printable(p['path'])}: {printable(p['message'])}",
                file=sys.stderr,
            )
    return code
