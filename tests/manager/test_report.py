"""`hyperwall report` through a live manager: HTML and PDF files for a tenant, from the
manager's content (assertions, the history of the rules involved from the ledger, the
matrix), and who may ask for which tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.manager.conftest import EXAMPLES, Live, start_server
from tests.manager.support import assertion
from tests.manager.test_cli import hw
from tests.manager.test_gate import write
from tests.report.test_pdf import pages_as_png


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, Path, str]]:
    """The examples (provider-admin), then an assertion applied by acme's tenant-admin."""
    base = tmp_path_factory.mktemp("hwb-report")
    server = start_server(f"sqlite:///{base}/hwb-report.db?poll=0.05", base / "admin.token")
    live = next(server)
    try:
        assert hw(live, "apply", "-f", str(EXAMPLES), "-m", "the examples").exit_code == 0
        with live.client() as client:
            acme = client.create_token("tenant-admin", tenant="acme").token
        rules = write(
            base / "a.yaml", [assertion("hwb-web-to-app", "web", "app", "app-api", "allow")]
        )
        r = hw(live, "apply", "-f", rules, "-m", "web always reaches the app tier", token=acme)
        assert r.exit_code == 0, r.output
        yield live, base, acme
    finally:
        server.close()


def test_html_and_pdf_reports_of_a_tenant(reported: tuple[Live, Path, str]) -> None:
    live, base, acme = reported
    html = base / "hwb.html"
    r = hw(live, "report", "--format", "html", "--out", str(html), "--tenant", "acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "out": str(html),
        "format": "html",
        "revision": 2,
        "assertions": 1,
        "failing": [],
        "ledgerIntact": True,
    }
    text = html.read_text()
    assert "acme/hwb-web-to-app" in text and "holds" in text
    assert "<code>acme/shop/web-to-app</code>" in text
    assert "web always reaches the app tier" in text and "tenant-admin@acme" in text
    assert "the examples" in text  # Policy acme/shop's history: revision 1
    assert 'class="matrix"' in text and "globex" not in text.split("Reachability")[1]

    pdf = base / "hwb.pdf"
    r = hw(live, "report", "--format", "pdf", "--out", str(pdf), token=acme)  # its own tenant
    assert r.exit_code == 0, r.output
    assert len(pages_as_png(pdf, base)) >= 2


def test_who_may_report_on_what(reported: tuple[Live, Path, str]) -> None:
    live, base, acme = reported
    out = str(base / "x.html")
    assert hw(live, "report", "--out", out, "--tenant", "globex", token=acme).exit_code == 3
    assert hw(live, "report", "--out", out, "--tenant", "nope").exit_code == 1
    r = hw(live, "report", "--out", out, "--json", "--no-lint")  # the whole fleet
    assert r.exit_code == 0 and json.loads(r.stdout)["assertions"] == 1
    assert "--no-lint" in Path(out).read_text()
