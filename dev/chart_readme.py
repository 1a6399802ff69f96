"""Generates helm/syncd/README.md from README.md.gotmpl, Chart.yaml and values.yaml's comments.

helm-docs style, without helm-docs (a Go tool not installable here): a value is documented by
a comment block that starts with `# -- ` right above its key (following `#` lines continue
it). The values table lists

* every documented key, with its default (a documented map is one row: its whole default);
* every undocumented leaf below undocumented maps (e.g. an alert's `for`), without a text.

The template's placeholders: {{ chart.name }}, {{ chart.version }}, {{ chart.appVersion }},
{{ chart.kubeVersion }}, {{ chart.description }}, {{ chart.home }}, {{ chart.sources }} (a
list), {{ chart.valuesTable }}.

    python dev/chart_readme.py           rewrite helm/syncd/README.md
    python dev/chart_readme.py --check   exit 1 (with a diff) when README.md is not current

tests/chart/test_readme.py runs the check, so a values.yaml change without a regenerated
README fails the chart tests (`make chart-readme` regenerates it).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "syncd"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?:\s|$)")
_ITEM = re.compile(r"^(?P<indent> *)- ")
_DOC = re.compile(r"^(?P<indent> *)# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^(?P<indent> *)#(?: (?P<text>.*))?$")
_PLACEHOLDER = re.compile(r"\{\{\s*chart\.(?P<name>\w+)\s*\}\}")


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def descriptions(values_text: str) -> dict[str, str]:
    """Dotted key path -> its `# --` description, from the raw text of values.yaml."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    pending: list[str] | None = None
    pending_indent = -1
    for line in values_text.splitlines():
        if (doc := _DOC.match(line)) is not None:
            pending, pending_indent = [doc["text"].strip()], len(doc["indent"])
            continue
        more = _MORE.match(line)
        if more is not None:
            if pending is not None and len(more["indent"]) == pending_indent:
                pending.append((more["text"] or "").strip())
            else:
                pending = None
            continue
        key = _KEY.match(line)
        item = _ITEM.match(line)
        if key is None and item is None:
            pending = None  # a blank line or a value continuation ends a comment block
            continue
        indent = len((key or item)["indent"])  # type: ignore[index]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if key is None:
            stack.append((indent, "[]"))  # keys inside list items are not values of their own
            pending = None
            continue
        path = ".".join([k for _, k in stack] + [key["key"]])
        if pending is not None and indent == pending_indent and "[]" not in path:
            docs[path] = " ".join(part for part in pending if part)
        pending = None
        stack.append((indent, key["key"]))
    return docs


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null"
    return "object"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def rows(values: dict[str, Any], docs: dict[str, str]) -> list[Row]:
    out: list[Row] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, value in node.items():
            path = f"{prefix}{name}"
            if path in docs or not isinstance(value, dict) or not value:
                default = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                out.append(Row(path, _type(value), default, docs.get(path, "")))
                if path not in docs or not isinstance(value, dict):
                    continue
                # A documented map is one row; its documented children get their own.
                for child, text in docs.items():
                    if child.startswith(path + ".") and child not in {r.key for r in out}:
                        sub = _lookup(values, child)
                        default = json.dumps(sub, ensure_ascii=False, separators=(",", ":"))
                        out.append(Row(child, _type(sub), default, text))
                continue
            walk(value, path + ".")

    walk(values, "")
    return out


def _lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def values_table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for row in rows(values, descriptions(values_text)):
        lines.append(
            f"| `{row.key}` | {row.type} | `{_cell(row.default)}` | {_cell(row.description)} |"
        )
    return "\n".join(lines)


def render(chart_dir: Path = CHART) -> str:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text(encoding="utf-8"))
    values_text = (chart_dir / "values.yaml").read_text(encoding="utf-8")
    fields: dict[str, str] = {
        "name": chart["name"],
        "version": str(chart["version"]),
        "appVersion": str(chart.get("appVersion", "")),
        "kubeVersion": str(chart.get("kubeVersion", "")),
        "description": " ".join(str(chart.get("description", "")).split()),
        "home": str(chart.get("home", "")),
        "sources": "\n".join(f"* <{url}>" for url in chart.get("sources", [])),
        "valuesTable": values_table(values_text),
    }
    template = (chart_dir / "README.md.gotmpl").read_text(encoding="utf-8")

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in fields:
            raise SystemExit(f"README.md.gotmpl: unknown placeholder chart.{name}")
        return fields[name]

    return _PLACEHOLDER.sub(fill, template).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not current")
    parser.add_argument("--chart", type=Path, default=CHART, help="chart directory")
    args = parser.parse_args(argv)
    readme = args.chart / "README.md"
    wanted = render(args.chart)
    if not args.check:
        readme.write_text(wanted, encoding="utf-8")
        return 0
    current = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if current == wanted:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(readme),
            "generated",
        )
    )
    print(f"{readme} is not current: run `python dev/chart_readme.py` (make chart-readme)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
