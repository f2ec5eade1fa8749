"""What the kernel decided for a traced probe, in the program's words: trace events (chain,
rule handle, verdict) back to the policy rule ids that `trace` prints. Pure.

Counterpart of `nft.policy_chains` (which renders a program chain's items as rules) and of
`nft.trace_kernel` (which collects the events). The walk follows one packet's events
(`attribute`):

- events before the packet reaches `to_vm` are the sender's end (egress), from there on the
  receiver's (ingress); an end took part when its dispatch chain `d_*` ran;
- in a policy chain `p_*` a rule with a verdict decides: `goto to_vm`/`accept` allow,
  `drop`, `jump reject`; a `goto l_*` (a logged rule) decides with the log chain's verdict;
  a `return` there is a `pass` (the tier chain returns on the mark; no decision);
- a dispatch chain's own verdict is the tenant's default; `spoofed` is anti-spoofing;
  `misdirected` and a drop in `forward`/`to_vm` itself are named as such; `established` is
  a packet conntrack already knew.

The rule behind a `p_*` rule: its position among the chain's rules in the kernel (`handles`,
read from the kernel when the events arrive) is its position in the rendered chain, which
`nft.hits.attribution` (the hit counters' map of rendered rules to rule ids) names: a
`MatchRule`'s rules carry its id, a `LookupRule`'s the block set each looks up. A chain whose
rule count in the kernel differs from the rendering cannot be mapped: the hit is reported
as `kernel:<chain>#<handle>`, which no offline rule id equals. A lookup of a folded block
(`LookupRule`) names the block, not the rule: a set element carries no rule id. Its rule
is the block's first rule (in block order, as the kernel's lookups and the reference
evaluator both take it) with an element matching the probe; every rule of a block has the
same action, so the verdict is the kernel's either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from hyperwall.compiler.program import ChainItem, HostProgram, LookupRule
from hyperwall.dataplane.nft.hits import Attribution, attribution
from hyperwall.dataplane.nft.table import SHAPES, TABLE, TO_VM, TableState, block_set_name
from hyperwall.dataplane.nft.table import policy_chain_name as p_name
from hyperwall.dataplane.nft.trace_netlink import TraceEvent
from hyperwall.evaluator.evaluate import _match_lookup
from hyperwall.evaluator.packet import Packet

EndName = Literal["egress", "ingress"]


@dataclass(frozen=True, slots=True)
class Hit:
    """The decision the kernel took at one end."""

    end: EndName
    verdict: str  # allow, drop, reject
    rule: str  # a policy rule id, default, anti-spoofing, ... (as `trace` prints)
    chain: str  # the nft chain and rule handle that decided
    handle: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "rule": self.rule,
            "chain": self.chain,
            "handle": self.handle,
        }


def first_packet(events: Sequence[TraceEvent]) -> list[TraceEvent]:
    """The events of the first traced packet in our table (a probe's later packets, such
    as the sender's reset after an unexpected answer, have other trace ids)."""
    ours = [e for e in events if e.table == TABLE]
    return [e for e in ours if e.id == ours[0].id] if ours else []


def decided(event: TraceEvent) -> bool:
    """Whether `event` ends the packet's way through our table on this host."""
    return event.table == TABLE and (
        event.verdict in ("accept", "drop", "stolen", "queue") or event.type == "policy"
    )


def _outcome(event: TraceEvent) -> str | None:
    """allow / drop / reject / pass of a deciding rule's verdict; None: no decision."""
    if event.verdict == "accept" or (event.verdict == "goto" and event.target == TO_VM):
        return "allow"
    if event.verdict == "drop":
        return "drop"
    if event.verdict == "jump" and event.target == "reject":
        return "reject"
    if event.verdict == "return" and event.chain.startswith(("p_", "l_")):
        return "pass"
    return None


def rule_of(
    table: Attribution,
    program: HostProgram,
    chain: str,
    handle: int | None,
    handles: Sequence[int],
    packet: Packet,
) -> str:
    """The policy rule id behind rule `handle` of nft chain `chain` (`handles`: the chain's
    rule handles in the kernel, in order; `table`: which rendered rule is which rule, as
    the hit counters read it, `nft.hits.attribution`)."""
    unmapped = f"kernel:{chain}#{handle}"
    keys = table.rules.get(chain)
    if keys is None or handle not in handles or len(keys) != len(handles):
        return unmapped  # the kernel's chain is not the program's: no position means anything
    position = handles.index(handle)
    key = keys[position]
    if key is not None:
        return key
    looked_up = table.lookups.get(chain, {}).get(position)
    for item in program_chains(program).get(chain, ()):
        if isinstance(item, LookupRule) and looked_up in _block_sets(item.block):
            return _match_lookup(program, item, packet) or item.rules[0]
    return unmapped


def program_chains(program: HostProgram) -> dict[str, tuple[ChainItem, ...]]:
    """nft policy chain name -> the program chain's items."""
    return {p_name(name): chain.items for name, chain in program.chains.items()}


def _block_sets(block: str) -> set[str]:
    return {block_set_name(block, shape) for shape in SHAPES}


_SPECIAL = {"spoofed": "anti-spoofing", "misdirected": "misdirected"}


def attribute(
    events: Sequence[TraceEvent],
    program: HostProgram,
    state: TableState,
    handles: Mapping[str, Sequence[int]],
    packet: Packet,
) -> list[Hit]:
    """The decisions of the ends the probe passed on this host, in order (egress first)."""
    table = attribution(program, state, None)
    end: EndName = "egress"
    seen: dict[EndName, bool] = {"egress": False, "ingress": False}
    hits: dict[EndName, Hit] = {}
    pending: tuple[str, int | None] | None = None  # a logged rule: its log chain decides

    def rule(chain: str, handle: int | None) -> str:
        return rule_of(table, program, chain, handle, handles.get(chain, ()), packet)

    def decide(verdict: str, rule_id: str, chain: str, handle: int | None) -> None:
        if end not in hits and verdict != "pass":
            hits[end] = Hit(end, verdict, rule_id, chain, handle)

    for e in first_packet(events):
        if e.chain == TO_VM and end == "egress":
            end = "ingress"
        if e.type != "rule":
            continue
        outcome = _outcome(e)
        if e.chain.startswith("d_"):
            seen[end] = True
            if outcome is not None:
                decide(outcome, "default", e.chain, e.handle)
        elif e.chain.startswith("p_"):
            if e.verdict == "goto" and e.target and e.target.startswith("l_"):
                pending = (e.chain, e.handle)
            elif outcome is not None:
                decide(outcome, rule(e.chain, e.handle), e.chain, e.handle)
        elif e.chain.startswith("l_") and pending is not None and outcome is not None:
            decide(outcome, rule(*pending), *pending)
            pending = None
        elif e.chain in _SPECIAL and outcome == "drop":
            seen[end] = True
            decide("drop", _SPECIAL[e.chain], e.chain, e.handle)
        elif e.chain == "established" and outcome is not None:
            seen[end] = True
            decide(outcome, "established", e.chain, e.handle)
        elif e.chain in ("forward", TO_VM) and outcome == "drop":
            seen[end] = True
            decide("drop", "unknown-interface", e.chain, e.handle)
    return [hits[n] for n in ("egress", "ingress") if n in hits and seen[n]]
