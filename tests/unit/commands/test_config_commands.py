"""check-config and preview without the stack (offline paths)."""

import json

import yaml

from syncd.cli import main
from tests.unit.config_helpers import DATA, DEMO

EVENT = DATA / "sales_order_confirmed.json"


def write_lines(tmp_path, rows):
    path = tmp_path / "lines.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


LINES = [
    {
        "line_no": 1,
        "item_name": "Consulting service",
        "tax_code": "3040201000000000000",
        "spec": None,
        "unit": "hour",
        "quantity": "2",
        "unit_price": "82.57",
        "tax_rate": "0.09",
        "discount_amount": 0,
    }
]


def test_check_config_prints_resolved_config_masked(capsys):
    assert main(["check-config", "-c", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    resolved = yaml.safe_load(out)
    assert resolved["issuer"]["app_secret"] == "**********"
    assert "syncd-dev-secret" not in out
    assert resolved["documents"]["sales_order"]["topic"] == "erp.erp.sales_order"
    assert err.strip() == f"{DEMO}: OK"


def test_check_config_json_format(capsys):
    assert main(["check-config", "-c", str(DEMO), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kafka"]["group_id"] == "syncd"


def test_check_config_exit_2_with_located_messages(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("  group_id: syncd", "  group_idd: syncd"))
    assert main(["check-config", "-c", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "kafka.group_idd: unknown key 'group_idd' -- did you mean 'group_id'?" in err
    assert f"{bad}: 1 problem(s)" in err


def test_preview_issue_with_offline_lines(tmp_path, capsys):
    lines = write_lines(tmp_path, LINES)
    code = main(["preview", "-c", str(DEMO), "--event", str(EVENT), "--lines", str(lines)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["problems"]
    assert out["decision"]["action"] == "issue"
    # the demo config has `reissues`: the decision says a re-issue is possible (the ledger
    # decides whether it is one: without a reversal it is the first issue)
    assert out["decision"]["reason"] == "re-issue: status became CONFIRMED"
    assert out["decision"]["key"] == {"id": 42}
    assert out["invoice"]["serial"] == out["decision"]["serial"]
    assert out["invoice"]["totals"] == {
        "net_amount": "165.14",
        "tax_amount": "14.86",
        "gross_amount": "180.00",
    }
    assert out["invoice"]["remark"] == "SO-2026-000042"
    assert out["problems"] == []


def test_preview_invalid_invoice_exits_1(tmp_path, capsys):
    lines = write_lines(tmp_path, [dict(LINES[0], tax_code="123")])
    code = main(["preview", "-c", str(DEMO), "--event", str(EVENT), "--lines", str(lines)])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [p["path"] for p in out["problems"]] == ["lines[0].tax_code"]


def test_preview_ignore_own_write_back(tmp_path, capsys):
    record = json.loads(EVENT.read_text())
    payload = record["value"]["payload"]
    payload["before"]["status"] = "CONFIRMED"
    payload["after"]["invoice_no"] = "26312000000000000042"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(record))
    assert main(["preview", "-c", str(DEMO), "--event", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"]["action"] == "ignore"
    assert out["decision"]["reason"] == "own write-back: only write-back columns changed"
    assert out["invoice"] is None


def test_preview_tombstone(tmp_path, capsys):
    record = json.loads(EVENT.read_text())
    record["value"] = None
    path = tmp_path / "event.json"
    path.write_text(json.dumps(record))
    assert main(["preview", "-c", str(DEMO), "--event", str(path)]) == 0
    decision = json.loads(capsys.readouterr().out)["decision"]
    assert decision["reason"] == "tombstone: not a row change"


def test_preview_bad_input_exits_2(tmp_path, capsys):
    path = tmp_path / "event.json"
    path.write_text('{"topic": "x"}')
    assert main(["preview", "-c", str(DEMO), "--event", str(path)]) == 2
    assert "expected an object" in capsys.readouterr().err
    assert main(["preview", "-c", str(DEMO), "--event", str(tmp_path / "none.json")]) == 2


def cancellation(tmp_path, invoice_no="26312000000000000042"):
    record = json.loads(EVENT.read_text())
    payload = record["value"]["payload"]
    for image in ("before", "after"):
        payload[image]["invoice_no"] = invoice_no
    payload["after"]["status"] = "CANCELLED"
    payload["after"]["cancel_reason"] = "RETURN"
    path = tmp_path / "cancel.json"
    path.write_text(json.dumps(record))
    return path


def test_preview_reversal_from_a_blue_file(tmp_path, capsys):
    lines = write_lines(tmp_path, LINES)
    assert main(["preview", "-c", str(DEMO), "--event", str(EVENT), "--lines", str(lines)]) == 0
    blue = tmp_path / "blue.json"
    blue.write_text(json.dumps(json.loads(capsys.readouterr().out)["invoice"]))
    code = main(
        ["preview", "-c", str(DEMO), "--event", str(cancellation(tmp_path)), "--blue", str(blue)]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["problems"]
    assert out["decision"]["action"] == "reverse"
    assert out["decision"]["reason"] == "status became CANCELLED"
    red = out["invoice"]
    assert red["kind"] == "RED"
    assert red["original_invoice_no"] == "26312000000000000042"
    assert red["reversal_reason"] == "SALES_RETURN"
    assert red["totals"]["gross_amount"] == "-180.00"
    assert red["serial"] == out["decision"]["serial"] != json.loads(blue.read_text())["serial"]


def test_preview_reversal_needs_the_invoice_number_with_blue_file(tmp_path, capsys):
    blue = tmp_path / "blue.json"
    blue.write_text("{}")
    code = main(
        [
            "preview",
            "-c",
            str(DEMO),
            "--event",
            str(cancellation(tmp_path, None)),
            "--blue",
            str(blue),
        ]
    )
    assert code == 2
    assert "not an invoice" in capsys.readouterr().err


def test_the_production_example_passes_check_config(tmp_path, capsys):
    """config/example.yaml (two companies on Nuonuo, secrets from files) validates as
    shipped, with only the secret volume pointed at a test directory."""
    from tests.unit.config_helpers import EXAMPLE

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "kafka-sasl-password").write_text("kafka-pass\n")
    (secrets / "database-dsn").write_text("postgresql+psycopg://syncd:pw@erp-db:5432/erp\n")
    (secrets / "issuer-app-secret").write_text("nuonuo-app-secret\n")
    config = tmp_path / "example.yaml"
    config.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("/var/run/secrets/syncd", str(secrets))
    )
    assert main(["check-config", "-c", str(config), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "nuonuo-app-secret" not in out
    data = json.loads(out)
    accounts = data["issuers"]
    assert sorted(accounts) == ["bj", "sh"]
    assert {a["provider"] for a in accounts.values()} == {"nuonuo"}
    assert accounts["bj"]["seller_tax_id"] == accounts["bj"]["seller"]["tax_id"]
    assert data["documents"]["billing"]["account"]["column"] == "company_code"
