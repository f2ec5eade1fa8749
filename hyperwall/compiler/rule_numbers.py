"""Rule numbers: a short number for each rule id of a host program, for where the kernel
has no room for the id (a log prefix holds 127 bytes, a conntrack mark 32 bits). Pure.

A rule id is what `trace` prints: `tenant/policy/rule`, `policy/rule`, or one of the
special ids `default` (a tenant's defaultAction), `anti-spoofing`, `misdirected` (a packet
to a VM that is not one of its addresses) and `unknown-interface`. Such an id can be 191
characters long, more than a log prefix holds.

The API (used by the nft renderer, the agent's flow log and its connection records):

- `rule_number(rule_id) -> int`: the id's number, in [1, 2**28). The special ids have
  fixed numbers 1-4 (`SPECIAL`); any other id's number is a hash of the id (16 and up).
  The number depends on the id alone: not on the program, its generation or the host. So a
  number written into the kernel (a log prefix, a conntrack mark) keeps its meaning when
  the program changes or the connection migrates to another host, and a renderer needs no
  table to write it. 0 is no number, and bits 28-31 are never set: a conntrack mark can
  carry a number and four bits of flags (`nft.ct_mark`).
- `RuleNumbers.of_program(program)`: the table number -> rule ids of one host program
  (every rule of its chains, and the special ids). `rule(number, text="")` maps a number
  back: the one id of that number, or, if two ids of the program share it (a hash
  collision: about n**2 / 2**29 pairs for n rules, 19 among 100,000), the one that
  starts with `text`; None if there is none or more than one. `merged(older)` is the
  union of two tables, for a reader that may still see numbers written under the
  previous program: since a number means the same id in every program, the union never
  maps a number to a wrong id; at worst a collision between the two programs makes a
  number ambiguous (None) without `text`.
- `log_prefix(rule_id, action, direction)`: the kernel's log prefix for a decision,
  `hw NUMBER ACTION DIRECTION RULE` (NUMBER in hexadecimal), at most `MAX_PREFIX` bytes:
  a rule id too long to fit is cut and ends in `~` (ids never contain `~`).
  `parse_log_prefix(text)` reads one back (`LogPrefix`); `LogPrefix.rule_id(numbers)` is
  the id: the complete id in the prefix as it is, a cut one through the table (the number,
  checked against the cut id). So the flow log names the right rule with no table at all
  for ids that fit (nearly all), and with the table of the current or the previous
  program for the rest: a packet logged under the old program and read after the new one
  is applied still maps right.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from hyperwall.compiler.program import HostProgram, LookupRule, MatchRule

DEFAULT = "default"
ANTI_SPOOFING = "anti-spoofing"
MISDIRECTED = "misdirected"
UNKNOWN_INTERFACE = "unknown-interface"
SPECIAL = {ANTI_SPOOFING: 1, MISDIRECTED: 2, UNKNOWN_INTERFACE: 3, DEFAULT: 4}
FIRST_HASHED = 16
NUMBER_LIMIT = 1 << 28  # numbers are below this: bits 28-31 are free for flags
MAX_PREFIX = 127  # bytes of a kernel log prefix (NF_LOG_PREFIXLEN, without its NUL)
PREFIX_TAG = "hw"
CUT = "~"  # ends a rule id cut to fit the prefix
_HEX = re.compile(r"[0-9a-f]{1,7}")


@lru_cache(maxsize=1 << 17)
def rule_number(rule_id: str) -> int:
    """The number of `rule_id`: a special id's fixed number, else a hash in [16, 2**28)."""
    special = SPECIAL.get(rule_id)
    if special is not None:
        return special
    digest = hashlib.blake2b(rule_id.encode(), digest_size=4, person=b"hw-rule").digest()
    value = int.from_bytes(digest, "big") % NUMBER_LIMIT
    return value if value >= FIRST_HASHED else value + FIRST_HASHED


def program_rule_ids(program: HostProgram) -> frozenset[str]:
    """Every rule id a decision of `program` can name."""
    ids: set[str] = set(SPECIAL)
    for chain in program.chains.values():
        for item in chain.items:
            if isinstance(item, MatchRule):
                ids.add(item.rule)
            elif isinstance(item, LookupRule):
                ids.update(item.rules)
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class RuleNumbers:
    """Number -> the rule ids of that number (nearly always one)."""

    ids: Mapping[int, tuple[str, ...]]

    @classmethod
    def of(cls, rule_ids: Iterable[str]) -> RuleNumbers:
        table: dict[int, set[str]] = {}
        for rule in rule_ids:
            table.setdefault(rule_number(rule), set()).add(rule)
        return cls({n: tuple(sorted(rules)) for n, rules in table.items()})

    @classmethod
    def of_program(cls, program: HostProgram) -> RuleNumbers:
        return cls.of(program_rule_ids(program))

    def rule(self, number: int, text: str = "") -> str | None:
        """The id of `number` (that starts with `text`); None if none or ambiguous."""
        found = [r for r in self.ids.get(number, ()) if r.startswith(text)]
        return found[0] if len(found) == 1 else None

    def merged(self, older: RuleNumbers) -> RuleNumbers:
        """This table and `older` together (a number in both: the ids of both)."""
        table = dict(older.ids)
        for number, rules in self.ids.items():
            table[number] = tuple(sorted({*table.get(number, ()), *rules}))
        return RuleNumbers(table)

    def collisions(self) -> dict[int, tuple[str, ...]]:
        """The numbers that more than one id shares."""
        return {n: rules for n, rules in self.ids.items() if len(rules) > 1}


@dataclass(frozen=True, slots=True)
class LogPrefix:
    """A log prefix read back: the rule's number, action, direction and its id (cut if
    `complete` is False)."""

    number: int
    action: str
    direction: str
    text: str
    complete: bool

    def rule_id(self, numbers: RuleNumbers | None = None) -> str | None:
        """The rule id: the complete one as written, a cut one through `numbers`."""
        if self.complete:
            return self.text
        return None if numbers is None else numbers.rule(self.number, self.text)


def log_prefix(rule_id: str, action: str, direction: str) -> str:
    """`hw NUMBER ACTION DIRECTION RULE`, the rule id cut (ending in `~`) to fit."""
    head = f"{PREFIX_TAG} {rule_number(rule_id):x} {action} {direction} "
    room = MAX_PREFIX - len(head.encode())
    if len(rule_id.encode()) <= room:
        return head + rule_id
    cut = rule_id.encode()[: room - 1].decode(errors="ignore")
    return head + cut + CUT


@lru_cache(maxsize=4096)  # a host has few distinct prefixes, and a flood repeats them
def parse_log_prefix(prefix: str) -> LogPrefix | None:
    """The parts of a prefix `log_prefix` made; None for any other prefix."""
    parts = prefix.strip().split(" ", 4)
    if len(parts) != 5 or parts[0] != PREFIX_TAG:
        return None
    if not _HEX.fullmatch(parts[1]):
        return None
    number = int(parts[1], 16)
    if not 0 < number < NUMBER_LIMIT or parts[3] not in ("in", "out") or not parts[4]:
        return None
    text = parts[4]
    if text.endswith(CUT):
        return LogPrefix(number, parts[2], parts[3], text[: -len(CUT)], False)
    return LogPrefix(number, parts[2], parts[3], text, True)
