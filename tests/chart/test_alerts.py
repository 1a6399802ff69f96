"""The default alerts: valid for promtool, behaving as documented, one runbook section each."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    DEFAULT_VALUES,
    RELEASE,
    RELEASES,
    ROOT,
    Render,
    find,
    scraped_job,
    tool,
)

pytestmark = pytest.mark.chart

HERE = Path(__file__).parent
RUNBOOK = ROOT / "docs" / "runbook.md"
#: Rules and the ServiceMonitor together, as in production: the alerts must select the `job`
#: the ServiceMonitor gives the series.
ENABLE = ("prometheusRule.enabled=true", "serviceMonitor.enabled=true")


def _groups(render: Render, *sets: str, release: str = RELEASE) -> list[dict[str, Any]]:
    docs = render(DEFAULT_VALUES, (*ENABLE, *sets), release)
    return list(find(docs, "PrometheusRule")["spec"]["groups"])


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("promtool")), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("release", RELEASES)
def test_promtool_check_rules(render: Render, tmp_path: Path, release: str) -> None:
    groups = _groups(render, release=release)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    proc = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("release", RELEASES)
def test_promtool_unit_tests(render: Render, tmp_path: Path, release: str) -> None:
    """alerts_test.yaml's series carry the job the rendered ServiceMonitor gives them: under
    a release name without "syncd" a selector on anything else never matches (SyncdDown
    fires forever, the other alerts never fire) and these tests fail."""
    job = scraped_job(render(DEFAULT_VALUES, ENABLE, release))
    groups = _groups(render, release=release)
    for rule in _alerts(groups):
        rule.pop("annotations")  # asserted in test_every_alert_is_documented_in_the_runbook
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = (HERE / "alerts_test.yaml").read_text(encoding="utf-8").replace("__JOB__", job)
    (tmp_path / "alerts_test.yaml").write_text(cases, encoding="utf-8")
    proc = _promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert proc.returncode == 0, f"release {release!r}, job {job!r}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("release", RELEASES)
def test_scraped_job_is_the_service_name(render: Render, release: str) -> None:
    docs = render(DEFAULT_VALUES, ENABLE, release)
    job = scraped_job(docs)
    assert job == find(docs, "Service")["metadata"]["name"]
    assert job == ("syncd" if release == "syncd" else f"{release}-syncd")
    for rule in _alerts(_groups(render, release=release)):
        assert f'job="{job}",namespace="erp-sync"' in rule["expr"], rule["alert"]


def test_every_default_alert_has_a_unit_test(render: Render) -> None:
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert {rule["alert"] for rule in _alerts(_groups(render))} == tested


def test_every_alert_is_documented_in_the_runbook(render: Render) -> None:
    headings = {
        match.group(1).strip().lower()
        for match in re.finditer(r"^#{2,3} (\w+)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    }
    base = "https://example.com/syncd/docs/runbook.md"
    sets = (f"prometheusRule.runbookBaseUrl={base}", "reconcile.enabled=true")
    for rule in _alerts(_groups(render, *sets)):
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        anchor = rule["alert"].lower()
        assert annotations["runbook_url"] == f"{base}#{anchor}"
        assert anchor in headings, f"docs/runbook.md has no '## {rule['alert']}' section"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_thresholds_come_from_values(render: Render) -> None:
    rules = {
        r["alert"]: r
        for r in _alerts(
            _groups(
                render,
                "prometheusRule.alerts.consumerLagGrowing.minMessages=4321",
                "prometheusRule.alerts.consumerLagGrowing.for=42m",
                "prometheusRule.alerts.freshnessTooOld.maxSeconds=999",
                "prometheusRule.alerts.rebalances.enabled=false",
                'prometheusRule.selector=app_kubernetes_io_instance="erp"',
            )
        )
    }
    assert "> 4321" in rules["SyncdConsumerLagGrowing"]["expr"]
    assert rules["SyncdConsumerLagGrowing"]["for"] == "42m"
    assert "> 999" in rules["SyncdFreshnessTooOld"]["expr"]
    assert "SyncdFrequentRebalances" not in rules
    assert 'app_kubernetes_io_instance="erp"' in rules["SyncdDown"]["expr"]


RECONCILE_ALERTS = {"SyncdReconcileExceptions", "SyncdReconcileNotRun"}


def test_reconcile_alerts_come_with_the_cronjob(render: Render) -> None:
    """Off by default: with no CronJob nothing records runs, and "not run" would fire."""
    assert not RECONCILE_ALERTS & {r["alert"] for r in _alerts(_groups(render))}
    rules = {r["alert"]: r for r in _alerts(_groups(render, "reconcile.enabled=true"))}
    assert set(rules) >= RECONCILE_ALERTS
    assert "syncd_reconcile_exceptions" in rules["SyncdReconcileExceptions"]["expr"]
    tuned = _groups(
        render,
        "reconcile.enabled=true",
        "prometheusRule.alerts.reconcileNotRun.maxAgeSeconds=7200",
        "prometheusRule.alerts.reconcileExceptions.enabled=false",
    )
    tuned_rules = {r["alert"]: r for r in _alerts(tuned)}
    assert "> 7200" in tuned_rules["SyncdReconcileNotRun"]["expr"]
    assert "SyncdReconcileExceptions" not in tuned_rules


@pytest.mark.parametrize("release", RELEASES)
def test_promtool_unit_tests_of_the_reconcile_alerts(
    render: Render, tmp_path: Path, release: str
) -> None:
    job = scraped_job(render(DEFAULT_VALUES, ENABLE, release))
    groups = _groups(render, "reconcile.enabled=true", release=release)
    for group in groups:
        group["rules"] = [r for r in group["rules"] if r.get("alert") in RECONCILE_ALERTS]
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = (HERE / "alerts_reconcile_test.yaml").read_text(encoding="utf-8")
    (tmp_path / "alerts_test.yaml").write_text(cases.replace("__JOB__", job), encoding="utf-8")
    proc = _promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert proc.returncode == 0, f"job {job!r}:\n{proc.stdout}{proc.stderr}"
    tests = yaml.safe_load(cases)["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert tested == RECONCILE_ALERTS
