"""Rule numbers: content-derived, stable, mapped back through a program's table, and log
prefixes that fit the kernel's 127 bytes even for the longest rule ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperwall.compiler.program import Chain, HostProgram, LookupRule, MatchRule
from hyperwall.compiler.rule_numbers import (
    FIRST_HASHED,
    MAX_PREFIX,
    NUMBER_LIMIT,
    SPECIAL,
    LogPrefix,
    RuleNumbers,
    log_prefix,
    parse_log_prefix,
    program_rule_ids,
    rule_number,
)

_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=63)
rule_ids = st.one_of(
    st.tuples(_name, _name, _name).map("/".join),
    st.tuples(_name, _name).map("/".join),
    st.sampled_from(sorted(SPECIAL)),
)


def _program(*items: MatchRule | LookupRule) -> HostProgram:
    return HostProgram("hv1", {}, {}, {"in:acme/p": Chain("in:acme/p", items)}, {})


def test_special_ids_have_fixed_numbers() -> None:
    assert [rule_number(r) for r in ("anti-spoofing", "misdirected", "unknown-interface")] == [
        1,
        2,
        3,
    ]
    assert rule_number("default") == 4


def test_program_table_holds_every_rule() -> None:
    program = _program(
        MatchRule("acme/p/a", "drop", True, None, None, None),
        LookupRule("b:x", "allow", ("acme/p/b", "acme/p/c")),
    )
    ids = program_rule_ids(program)
    assert ids == {"acme/p/a", "acme/p/b", "acme/p/c", *SPECIAL}
    table = RuleNumbers.of_program(program)
    for rule in ids:
        assert table.rule(rule_number(rule)) == rule
    assert table.rule(5) is None  # no rule has it
    assert table.collisions() == {}


def test_a_collision_is_ambiguous_without_text_and_resolved_with_it() -> None:
    table = RuleNumbers({99: ("acme/p/aa", "zeta/q/b")})
    assert table.rule(99) is None
    assert table.rule(99, "acme/") == "acme/p/aa"
    assert table.collisions() == {99: ("acme/p/aa", "zeta/q/b")}


def test_merged_keeps_the_previous_programs_numbers() -> None:
    old = RuleNumbers.of(["acme/p/gone", "acme/p/kept"])
    new = RuleNumbers.of(["acme/p/kept", "acme/p/new"])
    both = new.merged(old)
    for rule in ("acme/p/gone", "acme/p/kept", "acme/p/new"):
        assert both.rule(rule_number(rule)) == rule
    assert new.rule(rule_number("acme/p/gone")) is None


@given(rule_ids)
def test_numbers_are_in_range_and_depend_on_the_id_alone(rule: str) -> None:
    n = rule_number(rule)
    assert 0 < n < NUMBER_LIMIT
    assert (n < FIRST_HASHED) == (rule in SPECIAL)
    assert rule_number(str(rule)) == n


@given(
    rule_ids, st.sampled_from(["allow", "drop", "reject", "pass"]), st.sampled_from(["in", "out"])
)
def test_prefix_fits_and_reads_back(rule: str, action: str, direction: str) -> None:
    prefix = log_prefix(rule, action, direction)
    assert len(prefix.encode()) <= MAX_PREFIX
    parsed = parse_log_prefix(prefix)
    assert parsed is not None
    assert (parsed.number, parsed.action, parsed.direction) == (
        rule_number(rule),
        action,
        direction,
    )
    assert parsed.complete == (not prefix.endswith("~"))
    table = RuleNumbers.of([rule, "acme/other/rule"])
    assert parsed.rule_id(table) == rule
    if parsed.complete:
        assert parsed.rule_id() == rule  # no table needed
    else:
        assert rule.startswith(parsed.text)
        assert parsed.rule_id() is None


def test_longest_ids_map_right_even_when_they_collide() -> None:
    base = "t" * 63 + "/" + "p" * 63 + "/"
    long_a, long_b = base + "a" * 63, base + "b" * 63
    prefix = parse_log_prefix(log_prefix(long_a, "drop", "in"))
    assert prefix is not None and not prefix.complete
    assert prefix.rule_id(RuleNumbers.of([long_a, long_b])) == long_a
    # even two ids forced to share a number are told apart by the cut text, where it differs
    forced = RuleNumbers({prefix.number: (long_a, "x/" + long_b)})
    assert prefix.rule_id(forced) == long_a


@given(st.text(max_size=140))
def test_parse_rejects_what_is_not_ours(text: str) -> None:
    parsed = parse_log_prefix(text)
    if parsed is not None:
        assert isinstance(parsed, LogPrefix)
        assert text.strip().startswith("hw ")
        assert parsed.direction in ("in", "out")


def test_parse_examples() -> None:
    assert parse_log_prefix("hw drop anti-spoofing") is None  # the old form
    assert parse_log_prefix("hw 1 drop out anti-spoofing") == LogPrefix(
        1, "drop", "out", "anti-spoofing", True
    )
    assert parse_log_prefix("hw 0 drop out x") is None
    assert parse_log_prefix("hw 10000000 drop out x") is None
    assert parse_log_prefix("hw +1 drop out x") is None
    assert parse_log_prefix("hw 1 drop sideways x") is None
