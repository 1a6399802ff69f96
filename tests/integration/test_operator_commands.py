"""`syncd status`, `syncd retry` and `syncd dlq` as operators run them, against the real
PostgreSQL and Kafka of the local stack (own database, group and topics per module)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from sqlalchemy import text

from syncd.changes import RecordPosition
from syncd.identity import DocumentIdentity, DocumentKind, serial_for
from syncd.kafka.deadletter import dead_letter_headers
from syncd.ledger import repository as repo
from syncd.ledger.models import TopicPartition as LedgerTP
from syncd.lifecycle import DocumentState
from tests.integration.ops_env import OpsEnv, create_env, create_topic, drop_env
from tests.integration.sandbox_process import free_port
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

S = DocumentState
PAYLOAD = {"serial": "X", "lines": []}


@pytest.fixture(scope="module")
def env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsEnv]:
    e = create_env(stack, tmp_path_factory.mktemp("ops"))
    yield e
    drop_env(e)


def _erp_order(env: OpsEnv, status: str = "CONFIRMED", invoice_status: str | None = None) -> int:
    engine = env.erp()
    with engine.begin() as c:
        order_id = c.execute(
            text(
                "INSERT INTO erp.sales_order (order_no, status, buyer_name, invoice_status)"
                " VALUES (:no, :st, 'Test Buyer Ltd.', :inv) RETURNING id"
            ),
            {"no": f"T-{uuid.uuid4().hex[:12]}", "st": status, "inv": invoice_status},
        ).scalar_one()
    engine.dispose()
    return int(order_id)


def _ledger_row(
    env: OpsEnv,
    order_id: int,
    final: S,
    *,
    attempts: int = 0,
    position: RecordPosition | None = None,
) -> Any:
    identity = DocumentIdentity.of("sales_order", "erp.sales_order", {"id": order_id})
    serial = serial_for(
        DocumentIdentity.of(
            "sales_order", "erp.sales_order", [("id", order_id)], DocumentKind.ISSUE
        )
    )
    engine = env.ledger()
    with engine.begin() as c:
        row, _ = repo.ensure_document(
            c, identity, serial, actor="test", state=S.READY, payload=PAYLOAD, position=position
        )
        if final is not S.READY:
            row = repo.transition(
                c,
                row.id,
                S.READY,
                final,
                reason="test setup",
                attempts=attempts,
                last_error_code="HTTP_503",
                last_error="platform unavailable",
            )
    engine.dispose()
    return row


# --------------------------------------------------------------------------- status


def test_status_json_reports_states_stuck_parked_lag_leases_and_dead_letters(
    env: OpsEnv, stack: Stack
) -> None:
    config = env.config
    topic = config.documents["sales_order"].topic
    assert topic is not None
    create_topic(stack.bootstrap, topic, 2)
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    for i in range(5):
        producer.produce(topic, value=b"{}", partition=0, key=str(i).encode())
    producer.produce(
        config.kafka.dead_letter_topic,
        value=b"x",
        headers=list[Any](dead_letter_headers(RecordPosition(topic, 0, 1), "undecodable", "x")),
    )
    assert producer.flush(30) == 0
    dead = _ledger_row(env, _erp_order(env), S.DEAD, attempts=3)
    blocked = _ledger_row(env, _erp_order(env), S.BLOCKED)
    stuck = _ledger_row(env, _erp_order(env), S.RETRY_WAIT, attempts=1)
    engine = env.ledger()
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE syncd_ops.documents SET updated_at = now() - interval '1 hour'"
                " WHERE id = :id"
            ),
            {"id": stuck.id},
        )
        epochs = repo.claim_partitions(c, config.kafka.group_id, "replica-a", [LedgerTP(topic, 0)])
        repo.store_offsets(
            c, config.kafka.group_id, {LedgerTP(topic, 0): (2, epochs[LedgerTP(topic, 0)])}
        )
    engine.dispose()

    result = env.syncd("status", "-c", str(env.config_path), "--json", "--stuck-after", "600")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["DEAD"] == 1 and report["counts"]["BLOCKED"] == 1
    assert report["counts"]["RETRY_WAIT"] == 1 and report["total"] == 3
    assert [d["id"] for d in report["stuck"]] == [stuck.id]
    assert report["stuck"][0]["serial"] == stuck.serial
    assert report["stuck"][0]["last_error"] == "platform unavailable"
    assert {d["id"] for d in report["parked"]} == {dead.id, blocked.id}
    parts = {(p["topic"], p["partition"]): p for p in report["partitions"]}
    p0 = parts[(topic, 0)]
    assert (p0["stored_offset"], p0["high_watermark"], p0["lag"]) == (2, 5, 3)
    assert (p0["lease_owner"], p0["lease_epoch"]) == ("replica-a", 1)
    assert parts[(topic, 1)]["stored_offset"] is None and parts[(topic, 1)]["lag"] == 0
    assert report["dead_letter"] == {
        "topic": config.kafka.dead_letter_topic,
        "exists": True,
        "messages": 1,
    }
    human = env.syncd("status", "-c", str(env.config_path))
    assert human.returncode == 0
    assert "DEAD" in human.stdout and "replica-a" in human.stdout


# --------------------------------------------------------------------------- retry


def test_retry_moves_a_dead_row_to_outcome_unknown_due_now_and_tells_the_erp(
    env: OpsEnv,
) -> None:
    order_id = _erp_order(env, invoice_status="DEAD")
    row = _ledger_row(env, order_id, S.DEAD, attempts=10)
    before = datetime.now(UTC)
    result = env.syncd(
        "retry",
        "-c",
        str(env.config_path),
        "--document",
        f'sales_order:{{"id": {order_id}}}',
        "--reason",
        "provider outage over (ticket 42)",
    )
    assert result.returncode == 0, result.stderr
    assert "DEAD -> OUTCOME_UNKNOWN" in result.stdout and row.serial in result.stdout
    engine = env.ledger()
    with engine.connect() as c:
        after = repo.get_document(c, row.id)
        trail = repo.audit_trail(c, row.id)
    engine.dispose()
    assert after.state is S.OUTCOME_UNKNOWN and after.attempts == 0
    assert after.serial == row.serial and after.payload_hash == row.payload_hash
    assert after.next_attempt_at is not None and after.next_attempt_at <= datetime.now(UTC)
    assert after.next_attempt_at >= before - timedelta(seconds=5)  # database vs local clock
    assert trail[-1].reason == "operator retry" and trail[-1].from_state is S.DEAD
    assert trail[-1].actor.startswith("operator:")
    assert trail[-1].why == "provider outage over (ticket 42)"
    assert trail[-1].os_user and trail[-1].db_user and trail[-1].db_session_user
    assert trail[-1].details and trail[-1].details["previous_attempts"] == 10
    erp = env.erp()
    with erp.connect() as c:
        status = c.execute(
            text("SELECT invoice_status FROM erp.sales_order WHERE id = :id"), {"id": order_id}
        ).scalar_one()
    erp.dispose()
    assert status == "PENDING"


def test_retry_by_id_and_serial_and_refusals(env: OpsEnv) -> None:
    blocked = _ledger_row(env, _erp_order(env), S.BLOCKED)
    r = env.syncd(
        "retry", "-c", str(env.config_path), "--document", str(blocked.id), "--reason", "r"
    )
    assert r.returncode == 0, r.stderr
    # now OUTCOME_UNKNOWN: "retry now" is allowed again, by serial
    r = env.syncd(
        "retry", "-c", str(env.config_path), "--document", blocked.serial, "--reason", "r"
    )
    assert r.returncode == 0 and "OUTCOME_UNKNOWN -> OUTCOME_UNKNOWN" in r.stdout
    issued = _ledger_row(env, _erp_order(env), S.ISSUED)
    r = env.syncd(
        "retry", "-c", str(env.config_path), "--document", str(issued.id), "--reason", "r"
    )
    assert r.returncode == 1 and "ISSUED" in r.stderr
    r = env.syncd("retry", "-c", str(env.config_path), "--document", "999999999", "--reason", "r")
    assert r.returncode == 3 and "no ledger document" in r.stderr  # not found
    r = env.syncd(
        "retry", "-c", str(env.config_path), "--document", 'nope:{"id":1}', "--reason", "r"
    )
    assert r.returncode == 2 and "no document type" in r.stderr
    r = env.syncd("retry", "-c", str(env.config_path), "--document", "what?", "--reason", "r")
    assert r.returncode == 2


def test_retry_json_found_not_found_and_not_retryable(env: OpsEnv) -> None:
    cfg = str(env.config_path)
    dead = _ledger_row(env, _erp_order(env, invoice_status="DEAD"), S.DEAD, attempts=4)
    r = env.syncd("retry", "-c", cfg, "--document", dead.serial, "--json", "--reason", "r")
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["ok"] is True and answer["exit_code"] == 0
    assert answer["actor"].startswith("operator:")
    [one] = answer["retried"]
    assert (one["id"], one["serial"], one["kind"]) == (dead.id, dead.serial, "issue")
    assert (one["from_state"], one["to_state"]) == ("DEAD", "OUTCOME_UNKNOWN")
    assert (one["attempts_before"], one["attempts_after"]) == (4, 0)
    assert one["last_error_code"] == "HTTP_503" and one["last_error"] == "platform unavailable"
    assert one["writeback_problem"] is None

    r = env.syncd("retry", "-c", cfg, "--document", "999999999", "--json", "--reason", "r")
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout) == {
        "ok": False,
        "exit_code": 3,
        "error": "no ledger document matches 999999999",
        "reason": "not_found",
    }
    assert r.stderr.count("\n") == 1 and "no ledger document" in r.stderr

    issued = _ledger_row(env, _erp_order(env), S.ISSUED)
    r = env.syncd("retry", "-c", cfg, "--document", str(issued.id), "--json", "--reason", "r")
    assert r.returncode == 1, r.stderr
    refused = json.loads(r.stdout)
    assert refused["ok"] is False and refused["exit_code"] == 1
    assert refused["reason"] == "not_retryable"
    assert refused["documents"] == [{"id": issued.id, "state": "ISSUED"}]
    assert "only DEAD, BLOCKED, RETRY_WAIT and OUTCOME_UNKNOWN" in refused["error"]


# --------------------------------------------------------------------------- migrate


def test_migrate_json_and_check_json_on_the_real_ledger(env: OpsEnv) -> None:
    schema = f"syncd_mig_{uuid.uuid4().hex[:6]}"
    base = ["migrate", "--dsn", env.dsn, "--schema", schema, "--json"]
    before = env.syncd(*base, "--check")
    assert before.returncode == 1, before.stderr  # not at head: exit 1, not 4
    report = json.loads(before.stdout)
    assert report["ok"] is False and report["exit_code"] == 1
    assert report["schema"] == schema and report["current"] is None
    assert report["at_head"] is False and report["head"]

    done = env.syncd(*base)
    assert done.returncode == 0, done.stderr
    migrated = json.loads(done.stdout)
    assert migrated == {
        "ok": True,
        "exit_code": 0,
        "schema": schema,
        "current": report["head"],
        "head": report["head"],
        "at_head": True,
    }

    after = env.syncd(*base, "--check")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == {**migrated}

    by_config = env.syncd("migrate", "-c", str(env.config_path), "--check", "--json")
    assert by_config.returncode == 0, by_config.stderr
    assert json.loads(by_config.stdout)["schema"] == "syncd_ops"

    dead_dsn = env.dsn.replace(f":{env.stack.pg_port}/", f":{free_port()}/")
    assert dead_dsn != env.dsn
    down = env.syncd("migrate", "--dsn", dead_dsn, "--schema", schema, "--check", "--json")
    assert down.returncode == 4, down.stderr  # unreachable: distinct from "not at head"
    failed = json.loads(down.stdout)
    assert failed["ok"] is False and failed["exit_code"] == 4
    assert "unreachable" in failed["error"]
    assert down.stderr.count("\n") == 1

    engine = env.erp()
    with engine.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


# --------------------------------------------------------------------------- dead letters


def _read_partition(bootstrap: str, topic: str, partition: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[Any] = []
    try:
        while True:
            msg = consumer.poll(10)
            assert msg is not None, f"nothing from {topic}[{partition}]"
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF  # type: ignore[union-attr]
                return out
            out.append(msg)
    finally:
        consumer.close()


def test_dlq_replay_reproduces_original_bytes_to_the_source_partition_once(
    env: OpsEnv, stack: Stack, tmp_path: Path
) -> None:
    config = env.config
    source = f"{env.name}.replay-source"
    create_topic(stack.bootstrap, source, 3)
    dlq = f"{env.name}.dlq-replay-test"
    cfg = tmp_path / "dlq.yaml"
    cfg.write_text(env.config_path.read_text().replace(config.kafka.dead_letter_topic, dlq))
    key, value = b'{"schema":null,"payload":{"id":7}}', b"\xff\xfenot json\x00"
    original = [("traceparent", b"00-1234-5678-01"), ("empty", b"")]
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    producer.produce(
        dlq,
        key=key,
        value=value,
        headers=list[Any](
            dead_letter_headers(
                RecordPosition(source, 2, 41), "undecodable", "value is not JSON", original
            )
        ),
    )
    producer.produce(dlq, key=b"k", value=b"v", headers=[("other", b"1")])  # no source headers
    assert producer.flush(30) == 0

    listed = env.syncd("dlq", "list", "-c", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    first = json.loads(listed.stdout.splitlines()[0])
    assert first["source"] == f"{source}[2]@41" and first["code"] == "undecodable"

    dry = env.syncd("dlq", "replay", "-c", str(cfg), "--dry-run")
    assert dry.returncode == 0 and "would replay 1 record(s), skipped 1" in dry.stdout
    dry_json = env.syncd("dlq", "replay", "-c", str(cfg), "--dry-run", "--json")
    assert dry_json.returncode == 0, dry_json.stderr
    planned = json.loads(dry_json.stdout)
    assert planned["dry_run"] is True and (planned["replayed"], planned["skipped"]) == (1, 1)
    assert _read_partition(stack.bootstrap, source, 2) == []

    refused = env.syncd("dlq", "replay", "-c", str(cfg))
    assert refused.returncode == 2 and "--reason" in refused.stderr
    done = env.syncd("dlq", "replay", "-c", str(cfg), "--reason", "decoder fixed")
    assert done.returncode == 0, done.stderr
    assert "replayed 1 record(s), skipped 1" in done.stdout
    replayed = _read_partition(stack.bootstrap, source, 2)
    assert len(replayed) == 1
    assert replayed[0].key() == key and replayed[0].value() == value
    assert list(replayed[0].headers() or []) == original
    assert _read_partition(stack.bootstrap, source, 0) == []

    again = env.syncd("dlq", "replay", "-c", str(cfg), "--reason", "once more", "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["ok"] is True and answer["dry_run"] is False
    assert (answer["replayed"], answer["skipped"]) == (0, 0)  # the group already went past
    assert len(_read_partition(stack.bootstrap, source, 2)) == 1
