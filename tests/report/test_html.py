"""The report's HTML: every section with the expected content, names escaped."""

from __future__ import annotations

import re

from hyperwall.report.html import render_html
from tests.report.support import example_report


def test_the_html_holds_each_section() -> None:
    report = example_report()
    html = render_html(report)
    assert "<title>Compliance report: acme at revision 7</title>" in html
    assert "1 hold" in html and "1 fail" in html
    assert "acme/web-to-app" in html and "acme/office-to-app" in html
    assert "<code>acme/shop/web-to-app</code>" in html  # the evidence of the holding one
    case = next(a for a in report.assertions if not a["holds"])["counterexample"]
    assert f"hyperwall trace --from {case['from']} --to {case['to']}" in html
    assert "intact</span>: 7 records" in html and "ab" * 32 in html
    assert "2027-01-15 08:00:00 UTC" in html  # the record's time
    assert "tenant-admin@acme (token 0a1b2c)" in html
    assert "Policy acme/shop" in html
    reaching = sum(cell["reach"] for row in report.matrix for cell in row)
    assert len(re.findall(r'<td class="reach"', html)) == reaching > 0
    assert len(re.findall(r'<td class="none"', html)) == len(report.groups) ** 2 - reaching
    assert "a group that selects nothing</td><td><code>acme/hwb-nobody</code>" in html
    assert report.lint is not None
    assert len(re.findall(r"<td><code>acme/", html)) == len(report.lint)


def test_names_and_messages_are_escaped() -> None:
    html = render_html(example_report())
    assert "tighten &lt;the&gt; shop" in html and "<the>" not in html
    assert "web-to-app &lt;b&gt;" in html


def test_an_altered_ledger_is_said_first() -> None:
    report = example_report()
    report.ledger.intact = False
    report.ledger.firstAltered = 3
    assert "ALTERED</span>: first altered record 3" in render_html(report)


def test_a_report_without_lint_says_so() -> None:
    report = example_report()
    report.lint = None
    assert "Left out of this report (<code>--no-lint</code>)" in render_html(report)
