"""The conntrack mark an admitting rule sets: which rule let a connection in, for the
connection records (`agent.connections`). Pure.

Counterpart of `nft.policy_chains` and `nft.base_chains` (whose allow decisions set it, as
`ct mark set VALUE` before the verdict) and `agent.connections` (which reads it back from
the conntrack events). The mark is the connection's, not the packet's (`PASS_MARK` is a
packet mark, and nothing else of ours uses the conntrack mark):

- bit 30 `MANAGED`: a rule of ours admitted the connection (a connection without it is
  not a managed VM's and gets no record);
- bit 29 `INBOUND`: set at the receiving end (`in`), clear at the sender's (`out`). A
  connection between two VMs of one host passes both ends in one forward hook, the
  sender's first: the receiver's decision is the one the mark keeps;
- bit 28 `FOLDED`: the number is that of the first rule of a folded block (a
  `LookupRule`: one set lookup for many rules, so no per-rule statement); the agent finds
  the rule in the block by the connection's tuple;
- bits 0-27: the rule's number (`compiler.rule_numbers.rule_number`, the number the flow
  log's prefixes carry): derived from the rule id alone, so it means the same rule after a
  policy change and on the host a migrated VM's connection state was handed over to (the
  handover copies the mark with the entry), and rendering it needs no table. Two rules of
  one host with the same number are told apart by the connection's tuple
  (`agent.connections.resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperwall.compiler.rule_numbers import NUMBER_LIMIT, rule_number

MANAGED = 1 << 30
INBOUND = 1 << 29
FOLDED = 1 << 28
NUMBER = NUMBER_LIMIT - 1  # the rule number's bits: 0-27
MAX_NUMBER = NUMBER


@dataclass(frozen=True, slots=True)
class Mark:
    number: int
    direction: str  # "in" or "out"
    folded: bool


def encode(number: int, direction: str, folded: bool = False) -> int:
    """The mark for rule `number` deciding at `direction`'s end."""
    if not 0 <= number <= MAX_NUMBER:
        raise ValueError(f"rule number {number} does not fit the conntrack mark")
    return MANAGED | (INBOUND if direction == "in" else 0) | (FOLDED if folded else 0) | number


def decode(mark: int) -> Mark | None:
    """What `encode` put in; None for a mark that is not ours."""
    if not mark & MANAGED or mark >> 31:
        return None
    return Mark(mark & NUMBER, "in" if mark & INBOUND else "out", bool(mark & FOLDED))


def admit(action: str, rule: str, direction: str, folded: bool = False) -> list[dict[str, Any]]:
    """The statements an `action` decision of `rule` adds before its verdict: `ct mark set`
    for an allow, nothing otherwise."""
    if action != "allow":
        return []
    mark = encode(rule_number(rule), direction, folded)
    return [{"mangle": {"key": {"ct": {"key": "mark"}}, "value": mark}}]
