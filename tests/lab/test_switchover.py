"""A migration's kernel changes and its documents, without root: `lab.switchover` and the pure
parts of `lab.migrate`."""

from __future__ import annotations

import pytest

from hyperwall.io.files import decode_text, load_catalog
from hyperwall.lab.migrate import echo_peer, placed, rehost_documents
from hyperwall.lab.switchover import plan_switchover
from hyperwall.lab.topology import TopologyError, build_plan
from hyperwall.policy.model import Catalog

from .conftest import EXAMPLES

DB = "acme/db-1"  # on hv2, two interfaces


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES])


def test_routed_switchover_moves_links_and_reroutes_the_underlay(catalog: Catalog) -> None:
    old = build_plan("t1", catalog)
    new = build_plan("t1", placed(catalog, DB, "hv1"))
    sw = plan_switchover(old, new, DB)
    hv1, hv2, ext = "hwl-t1-h-hv1", "hwl-t1-h-hv2", "hwl-t1-x"
    assert (sw.source, sw.dest, sw.source_ns, sw.dest_ns) == ("hv2", "hv1", hv2, hv1)
    assert sw.links == ("hwt525400010041", "hwt525400010141")
    assert sw.move_lines() == (
        f"link set hwt525400010041 netns {hv1}",
        f"link set hwt525400010141 netns {hv1}",
    )
    attach = "\n".join(sw.attach)
    assert "link set hwt525400010041 addrgenmode none" in attach
    assert "address replace fe80::1/64 dev hwt525400010041 nodad" in attach
    assert "route replace 10.1.0.42/32 dev hwt525400010141" in attach
    assert "route replace fd00:1::41/128 dev hwt525400010041" in attach
    assert (
        "neigh replace 10.1.0.41 lladdr 52:54:00:01:00:41 dev hwt525400010041 nud permanent"
    ) in attach
    assert set(sw.reroute) == {hv2, ext}  # the source is now one of the other hosts
    for ns in (hv2, ext):
        assert f"route replace 10.1.0.41/32 via {new.host('hv1').ipv4} dev uplink" in sw.reroute[ns]
        assert (
            f"route replace fd00:1::42/128 via {new.host('hv1').ipv6} dev uplink"
            in (sw.reroute[ns])
        )
    assert sw.remove == {} and sw.fdb == {} and sw.resolve == ()
    assert any("/conf/hwt525400010041/rp_filter=0" in s for s in sw.sysctls)
    # the reverse move is the mirror image
    back = plan_switchover(new, old, DB)
    assert (back.source, back.dest) == ("hv1", "hv2") and back.links == sw.links


def test_bridge_switchover_moves_ports_and_forgets_the_vms_macs(catalog: Catalog) -> None:
    old = build_plan("t1", catalog, "bridge")
    new = build_plan("t1", placed(catalog, DB, "hv1"), "bridge")
    sw = plan_switchover(old, new, DB)
    assert "link set hwt525400010041 master hwbr0" in sw.attach
    assert sw.reroute == {} or all(
        "route replace" in line for v in sw.reroute.values() for line in v
    )
    assert set(sw.fdb) == {"hwl-t1-h-hv1", "hwl-t1-h-hv2", "hwl-t1-x"}
    assert "fdb del 52:54:00:01:01:41 dev hwvx0 self" in sw.fdb["hwl-t1-x"]
    assert "fdb del 52:54:00:01:00:41 dev hwvx0 master" in sw.fdb["hwl-t1-h-hv2"]
    assert "fdb del 52:54:00:01:00:41 dev hwvx0 master" not in sw.fdb["hwl-t1-x"]
    assert "neigh flush dev eth1 nud incomplete" in sw.resolve


def test_switchover_refuses_plans_that_differ_otherwise(catalog: Catalog) -> None:
    plan = build_plan("t1", catalog)
    with pytest.raises(TopologyError, match="nothing moves"):
        plan_switchover(plan, plan, DB)
    with pytest.raises(TopologyError, match="hosts or mode"):
        plan_switchover(plan, build_plan("t1", placed(catalog, DB, "hv1"), "bridge"), DB)


def test_rehost_documents_changes_only_the_vms_host(catalog: Catalog) -> None:
    path = EXAMPLES / "workloads-hv2.yaml"
    text = rehost_documents(path.read_text(), path.name, catalog.workloads[DB], "hv1")
    assert text is not None
    before = [d for d, _ in decode_text(path.read_text(), path.name)[0]]
    after = [d for d, _ in decode_text(text, path.name)[0]]
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert len(changed) == 1
    b, a = changed[0]
    assert a["metadata"] == b["metadata"] and a["spec"]["host"] == "hv1"
    assert {**a["spec"], "host": "hv2"} == b["spec"]
    other = EXAMPLES / "workloads-hv1.yaml"
    assert rehost_documents(other.read_text(), other.name, catalog.workloads[DB], "hv1") is None


def test_echo_peer_is_a_path_the_policy_allows(catalog: Catalog) -> None:
    src, dst, port = echo_peer(catalog, DB) or ("", "", 0)
    assert src == "10.1.0.41" and dst and port
    from hyperwall.analysis.trace import trace

    assert trace(catalog, src, dst, f"udp/{port}").verdict == "allow"
