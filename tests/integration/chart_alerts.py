"""The Helm chart's alert rules judged by promtool on a real scrape of the daemon.

A scrape's samples become promtool input series of one pod (the `job` the chart's
ServiceMonitor gives them, a namespace, a pod), held unchanged for `minutes` -- what
Prometheus would see if the daemon stayed as scraped -- and promtool evaluates one alert
of the rendered PrometheusRule at the end: the test names the alerts it expects.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from tests.chart.conftest import DEFAULT_VALUES, find, helm, scraped_job, template_args, tool

NAMESPACE = "erp-sync"


def samples(metrics: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """`(series, value)` of the scrape's samples of the metrics `names`."""
    wanted = tuple(f"{name}{{" for name in names) + tuple(f"{name} " for name in names)
    out: list[tuple[str, str]] = []
    for line in metrics.splitlines():
        if line.startswith(wanted):
            series, value = line.rsplit(" ", 1)
            out.append((series, value))
    return out


def evaluate(
    scrape: Iterable[tuple[str, str]],
    alertname: str,
    expected: Sequence[Mapping[str, str]],
    tmp: Path,
    *,
    pod: str = "syncd-0",
    minutes: int = 60,
) -> str:
    """promtool's verdict on the chart's `alertname` after `scrape` held for `minutes`:
    it must fire exactly for the label sets `expected` (an empty list: not at all)."""
    sets = ("prometheusRule.enabled=true", "serviceMonitor.enabled=true")
    docs = [d for d in yaml.safe_load_all(helm(*template_args(DEFAULT_VALUES, sets)).stdout) if d]
    job = scraped_job(docs)
    groups = find(docs, "PrometheusRule")["spec"]["groups"]
    for group in groups:
        group["rules"] = [r for r in group["rules"] if r.get("alert") == alertname]
        for rule in group["rules"]:
            rule.pop("annotations")
    groups = [g for g in groups if g["rules"]]
    assert groups, f"the chart has no alert {alertname}"
    (tmp / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    series = []
    for name, value in scrape:
        metric, _, labels = name.partition("{")
        labels = labels.rstrip("}")
        extra = f'job="{job}",namespace="{NAMESPACE}",pod="{pod}"'
        series.append(
            {
                "series": f"{metric}{{{extra}{',' + labels if labels else ''}}}",
                "values": f"{float(value):g}x{minutes + 5}",
            }
        )
    case = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{minutes}m",
                        "alertname": alertname,
                        "exp_alerts": [
                            {"exp_labels": {"job": job, "namespace": NAMESPACE, **labels}}
                            for labels in expected
                        ],
                    }
                ],
            }
        ],
    }
    (tmp / "case.yaml").write_text(yaml.safe_dump(case))
    proc = subprocess.run(
        [str(tool("promtool")), "test", "rules", "case.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
