"""The log rules' counters: which chains hold them, what a listing says, and what was
suppressed between readings (counter restarts included)."""

from __future__ import annotations

from typing import Any

from hyperwall.compiler.program import Chain, Endpoint, HostProgram, MatchRule
from hyperwall.compiler.rule_numbers import log_prefix
from hyperwall.dataplane.nft.base_chains import render_dispatch
from hyperwall.dataplane.nft.log_counters import (
    SuppressionTracker,
    log_chains,
    read_log_counters,
)
from hyperwall.dataplane.nft.policy_chains import log_chain


def _program() -> HostProgram:
    chains = {
        "in:acme/p": Chain(
            "in:acme/p",
            (
                MatchRule("acme/p/logged", "drop", True, None, None, None),
                MatchRule("acme/p/quiet", "drop", False, None, None, None),
            ),
        )
    }
    ep = Endpoint("acme/w/eth0", "acme/w", "eth0", "acme", "52:54:00:00:00:01", ("10.0.0.1",),
                  ((), (), (), ("in:acme/p",)), ((), (), (), ()), "drop", True)  # fmt: skip
    return HostProgram("hv1", {}, {}, chains, {ep.key: ep})


def test_log_chains_name_static_logged_rules_and_logged_defaults() -> None:
    program = _program()
    names = log_chains(program, "routed")
    assert {"spoofed", "misdirected", "forward", "to_vm"} <= set(names)
    assert log_chain("acme/p/logged", "drop", "in").name in names
    assert log_chain("acme/p/quiet", "drop", "in").name not in names
    ep = next(iter(program.endpoints.values()))
    assert render_dispatch(ep, "in", frozenset())[0].name in names
    assert {"br:pre", "br:out", "br:local"} <= set(log_chains(program, "bridge"))


def _listing(prefix: str, total: int, logged: int) -> dict[str, Any]:
    rule = {
        "expr": [
            {"counter": {"packets": total, "bytes": 0}},
            {"limit": {"rate": 200}},
            {"log": {"prefix": prefix, "group": 100}},
            {"counter": {"packets": logged, "bytes": 0}},
        ]
    }
    decide = {"expr": [{"counter": {"packets": total, "bytes": 0}}, {"drop": None}]}
    return {"nftables": [{"metainfo": {}}, {"rule": rule}, {"rule": decide}]}


def test_suppressed_between_readings_with_restarts() -> None:
    p = log_prefix("acme/p/logged", "drop", "in")
    assert read_log_counters("l_x", _listing(p, 10, 4)) == {("l_x", p): (10, 4)}
    tracker = SuppressionTracker()
    assert tracker.update(read_log_counters("l_x", _listing(p, 10, 4))) == {}  # the start
    assert tracker.update(read_log_counters("l_x", _listing(p, 30, 14))) == {p: 10}
    assert tracker.update(read_log_counters("l_x", _listing(p, 30, 14))) == {}
    assert tracker.update(read_log_counters("l_x", _listing(p, 5, 2))) == {p: 3}  # rendered again
    both = {
        **read_log_counters("l_x", _listing(p, 9, 2)),
        **read_log_counters("l_y", _listing(p, 4, 1)),
    }
    assert tracker.update(both) == {p: 4 + 3}  # a new chain counts from 0
