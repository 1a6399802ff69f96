"""Finding the metric names that PromQL expressions (alerts, dashboard panels) refer to."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import promql_parser

# Grafana variables and their harmless stand-ins, so dashboard queries parse as plain PromQL.
_GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<query>.+?)\s*,\s*\w+\s*\)\s*$")


def grafana_to_promql(expr: str) -> str:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    # $namespace / ${job} only ever appear inside label-matcher strings in our dashboard.
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def metric_names(expr: str) -> set[str]:
    """Names of all vector selectors in a PromQL expression (raises on a syntax error)."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_queries(path: Path) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and templating query of a Grafana dashboard."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = _LABEL_VALUES.match(text)
        if match:
            yield f"variable {variable['name']!r}", match.group("query")


def rule_queries(groups: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(alert or record name, PromQL) for every rule of Prometheus rule groups."""
    for group in groups:
        for rule in group.get("rules", []):
            yield rule.get("alert") or rule.get("record", "?"), rule["expr"]
