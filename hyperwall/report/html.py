"""The report's HTML: one Jinja2 template (`templates/report.html.j2`, autoescaped: every
name in it comes from documents), tables and a reachability heatmap, print CSS for PDF."""

from __future__ import annotations

import time
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from hyperwall.manager_api import ReportBody

_ENV = Environment(
    loader=PackageLoader("hyperwall.report", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def short(name: str, tenant: str | None) -> str:
    """A group key without its tenant's prefix, in a tenant's report."""
    return name.removeprefix(f"{tenant}/") if tenant else name


def actor(record: dict[str, Any]) -> str:
    who = record.get("actor") or {}
    if not who.get("role"):
        return str(record.get("author", ""))
    scope = f"@{who['scope']}" if who.get("scope") else ""
    return f"{who['role']}{scope} (token {who.get('token')})"


_ENV.filters.update(utc=utc, short=short, actor=actor)

LINT_TEXT = {
    "unmatched": "matches no packet where it is enforced (dead)",
    "shadowed": "shadowed: earlier rules take every packet it matches",
    "redundant": "redundant: no verdict changes without it",
    "pass-nothing": "a pass rule that passes nothing",
    "empty-group": "a group that selects nothing",
}


def render_html(report: ReportBody) -> str:
    holding = sum(1 for a in report.assertions if a["holds"])
    return _ENV.get_template("report.html.j2").render(
        r=report,
        holding=holding,
        failing=len(report.assertions) - holding,
        reached=sum(1 for row in report.matrix for cell in row if cell["reach"]),
        lint_text=LINT_TEXT,
    )
