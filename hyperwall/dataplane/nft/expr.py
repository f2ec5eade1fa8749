"""Builders of nftables JSON expressions (libnftables' JSON schema), shared by the chain
renderers (`nft.policy_chains`, `nft.base_chains`). Pure.

A rule is a list of expressions (`Expr`), stored in `ChainSpec.rules` as canonical JSON text
(`dump`), so rendered chains compare and hash as strings.
"""

from __future__ import annotations

import json
from typing import Any

from hyperwall.compiler.rule_numbers import log_prefix
from hyperwall.dataplane.nft.table import TO_VM

LOG_GROUP = 100
LOG_RATE = 200  # log lines per second per rule before the kernel's limit drops them

Expr = list[dict[str, Any]]


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def payload(protocol: str, fieldname: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": fieldname}}


def match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def ip_protocol(family: int) -> str:
    """The payload protocol of IP `family` (4 or 6): "ip" or "ip6"."""
    return "ip" if family == 4 else "ip6"


def verdict(action: str, direction: str = "in") -> dict[str, Any]:
    """The nft verdict of an action at one end (`direction` "out" = the sender's end)."""
    if action == "allow":
        return {"goto": {"target": TO_VM}} if direction == "out" else {"accept": None}
    if action == "drop":
        return {"drop": None}
    return {"jump": {"target": "reject"}}


def vmap(keys: list[dict[str, Any]], data: str) -> dict[str, Any]:
    """A verdict-map lookup of the concatenation of `keys` in map `data` ("@name")."""
    return {"vmap": {"key": {"concat": keys}, "data": data}}


def log(rule: str, action: str, direction: str) -> Expr:
    """Log a decision (rate-limited, NFLOG group `LOG_GROUP`) with the prefix of
    `rule_numbers.log_prefix`, between two counters: the first counts every packet, the
    second those logged, so their difference is what the limit suppressed
    (`flows.suppressed`). Never in a rule with a verdict: once over the limit the rule stops
    matching, and the verdict would be skipped."""
    return [
        {"counter": None},
        {"limit": {"rate": LOG_RATE, "per": "second", "burst": 50, "burst_unit": "packets"}},
        {"log": {"prefix": log_prefix(rule, action, direction), "group": LOG_GROUP}},
        {"counter": None},
    ]


def dump(expr: Expr) -> str:
    """A rule's expressions as canonical JSON text (what `ChainSpec.rules` holds)."""
    return json.dumps(expr, sort_keys=True, separators=(",", ":"))
