"""`analysis.live.compare`: the kernel's decisions beside `trace`, and what counts as a
difference (on the examples' catalog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperwall.analysis.live import LiveEnd, compare
from hyperwall.analysis.trace import trace
from hyperwall.io.files import load_catalog
from hyperwall.policy.model import Catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


def test_the_same_decisions_agree(catalog: Catalog) -> None:
    offline = trace(catalog, "app-2", "db-1", "postgres")
    live = {
        "egress": LiveEnd("allow", "acme/shop/app-to-db", "hv2", "p_1", 3),
        "ingress": LiveEnd("allow", "acme/shop/app-to-db", "hv2", "p_2", 4),
    }
    result = compare(offline, live)
    assert result.agrees and result.unchecked == ()
    assert result.to_json()["live"]["ingress"]["host"] == "hv2"


def test_a_denied_sender_leaves_the_receiver_unchecked(catalog: Catalog) -> None:
    offline = trace(catalog, "web-1", "db-1", "tcp/5432")
    assert offline.egress is not None and offline.egress.verdict == "reject"
    result = compare(offline, {"egress": LiveEnd("reject", "acme/shop/web-to-db", "hv1")})
    assert result.agrees and result.unchecked == ("ingress",)


def test_differences(catalog: Catalog) -> None:
    offline = trace(catalog, "app-2", "db-1", "postgres")
    allow = LiveEnd("allow", "acme/shop/app-to-db", "hv2")
    other = compare(offline, {"egress": allow, "ingress": LiveEnd("drop", "default", "hv2")})
    assert other.differences == (
        "ingress: offline allow by acme/shop/app-to-db, kernel drop by default "
        "(host hv2, chain , handle None)",
    )
    missing = compare(offline, {"egress": allow})
    assert missing.differences == (
        "ingress: offline allow by acme/shop/app-to-db, but the probe was not seen deciding there",
    )
    # the kernel let the sender's end pass what offline rejects: the receiver is checked too
    rejected = trace(catalog, "web-1", "db-1", "tcp/5432")
    leaked = compare(rejected, {"egress": LiveEnd("allow", "kernel:p_x#4", "hv1")})
    assert len(leaked.differences) == 2 and not leaked.agrees
    external = trace(catalog, "web-1", "192.0.2.9", "tcp/80")
    assert external.ingress is None
    extra = compare(external, {"ingress": LiveEnd("allow", "x", "hv1")})
    assert any("not a managed workload" in d for d in extra.differences)
