"""Tests for `hyperwall.policy.selector`: the selector language's parser and matcher.

The fleet-wide counterpart, `selector_index`, is tested in `test_selector_index`, which
reuses the syntax-tree strategy defined here.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperwall.policy.selector import (
    MAX_DEPTH,
    All,
    And,
    Eq,
    Has,
    In,
    Ne,
    Node,
    Not,
    NotIn,
    Or,
    Selector,
    SelectorSyntaxError,
    parse_selector,
    render,
)

KEY_CHARS = string.ascii_letters + string.digits + "_./-"
TERM_START = "a label key, 'has(', 'all()', '!' or '('"
OPERATOR = "'==', '!=', 'in' or 'not in'"
AFTER_TERM = "'&&', '||' or end of selector"
AFTER_TERM_IN_PARENS = "'&&', '||' or ')'"
STRING = "a quoted string"
END = "end of selector"


def nodes(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[Node]:
    """Random syntax trees over the given keys and values."""
    value_sets = st.frozensets(values, min_size=1, max_size=3)
    leaves: st.SearchStrategy[Node] = st.one_of(
        st.just(All()),
        st.builds(Eq, keys, values),
        st.builds(Ne, keys, values),
        st.builds(In, keys, value_sets),
        st.builds(NotIn, keys, value_sets),
        st.builds(Has, keys),
    )

    def branches(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        operands = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(
            st.builds(Not, children), st.builds(And, operands), st.builds(Or, operands)
        )

    return st.recursive(leaves, branches, max_leaves=10)


any_keys = st.one_of(
    st.sampled_from(["in", "not", "has", "all", "hyperwall.io/name", "a-b_c.d/e"]),
    st.text(KEY_CHARS, min_size=1, max_size=10),
)
any_nodes = nodes(any_keys, st.text(max_size=6))


def sel(text: str) -> Node:
    return parse_selector(text).root


# --- every construct ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root"),
    [
        ('role == "web"', Eq("role", "web")),
        ('role != "web"', Ne("role", "web")),
        ('role in {"web"}', In("role", frozenset({"web"}))),
        ('role in {"web", "db", "web"}', In("role", frozenset({"web", "db"}))),
        ('role not in {"web", "db"}', NotIn("role", frozenset({"web", "db"}))),
        ("has(role)", Has("role")),
        ("all()", All()),
        ('!role == "web"', Not(Eq("role", "web"))),
        ("!!has(a)", Not(Not(Has("a")))),
        ('(role == "web")', Eq("role", "web")),
        ('a == "1" && b == "2" && c == "3"', And((Eq("a", "1"), Eq("b", "2"), Eq("c", "3")))),
        ('a == "1" || b == "2" || c == "3"', Or((Eq("a", "1"), Eq("b", "2"), Eq("c", "3")))),
    ],
)
def test_constructs(text: str, root: Node) -> None:
    assert sel(text) == root


@pytest.mark.parametrize(
    ("text", "root"),
    [
        # && binds tighter than ||
        (
            'a == "1" || b == "2" && c == "3"',
            Or((Eq("a", "1"), And((Eq("b", "2"), Eq("c", "3"))))),
        ),
        (
            'a == "1" && b == "2" || c == "3"',
            Or((And((Eq("a", "1"), Eq("b", "2"))), Eq("c", "3"))),
        ),
        # parentheses override it
        (
            '(a == "1" || b == "2") && c == "3"',
            And((Or((Eq("a", "1"), Eq("b", "2"))), Eq("c", "3"))),
        ),
        # ! binds tightest
        ('!a == "1" && b == "2"', And((Not(Eq("a", "1")), Eq("b", "2")))),
        ('!(a == "1" && b == "2")', Not(And((Eq("a", "1"), Eq("b", "2"))))),
        ("!has(a) || all()", Or((Not(Has("a")), All()))),
        # nested same operators are kept as written
        (
            '(a == "1" && b == "2") && c == "3"',
            And((And((Eq("a", "1"), Eq("b", "2"))), Eq("c", "3"))),
        ),
        ("((((has(a)))))", Has("a")),
    ],
)
def test_precedence_and_parentheses(text: str, root: Node) -> None:
    assert sel(text) == root


def test_keywords_are_keys_too() -> None:
    assert sel('in in {"x"}') == In("in", frozenset({"x"}))
    assert sel('not not in {"x"}') == NotIn("not", frozenset({"x"}))
    assert sel('has == "x"') == Eq("has", "x")
    assert sel('all != "x"') == Ne("all", "x")
    assert sel("has(has)") == Has("has")
    assert sel("has(all) && all()") == And((Has("all"), All()))
    assert sel('in == "1" && not == "2"') == And((Eq("in", "1"), Eq("not", "2")))


@pytest.mark.parametrize(
    "key", ["hyperwall.io/name", "app.kubernetes.io/part-of", "a_b", "0", "-./_", "A9"]
)
def test_keys_with_dots_slashes_dashes(key: str) -> None:
    selector = parse_selector(f'{key} == "x" || has({key})')
    assert selector.keys == {key}
    assert selector.matches({key: "x"})
    assert not selector.matches({"other": "x"})


def test_strings() -> None:
    assert sel("a == 'web'") == Eq("a", "web")
    assert sel("a == ''") == Eq("a", "")
    assert sel("a == 'say \"hi\"'") == Eq("a", 'say "hi"')
    assert sel(r'a == "say \"hi\""') == Eq("a", 'say "hi"')
    assert sel(r"a == 'it\'s'") == Eq("a", "it's")
    assert sel(r'a == "back\\slash"') == Eq("a", "back\\slash")
    assert sel(r'a == "\\"') == Eq("a", "\\")
    assert sel(r'a == "C:\dir"') == Eq("a", r"C:\dir")  # other backslashes are literal
    assert sel('a == "&& || ( ) { } , ! =="') == Eq("a", "&& || ( ) { } , ! ==")
    assert sel("a in {\"x\", 'y'}") == In("a", frozenset({"x", "y"}))
    assert sel('a == "two\nlines"') == Eq("a", "two\nlines")


@pytest.mark.parametrize(
    "text",
    [
        'a=="1"&&b!="2"||!has(c)&&d in{"x","y"}&&e not in{"z"}',
        '  a == "1"  &&  b != "2"  ||  ! has ( c )  &&  d  in  { "x" , "y" }  &&  e not in {"z"} ',
        '\ta\t==\t"1"\n&&\nb\r\n!=\r\n"2"||!has(c)&&d in {"y","x"}&&e not \n\t in {"z"}',
    ],
)
def test_whitespace_is_free(text: str) -> None:
    expected = parse_selector(
        'a == "1" && b != "2" || !has(c) && d in {"x", "y"} && e not in {"z"}'
    )
    selector = parse_selector(text)
    assert selector == expected
    assert hash(selector) == hash(expected)
    assert selector.text == text


def test_all_and_has_need_parentheses_after_them() -> None:
    assert sel("all ( )") == All()
    assert sel("has ( x )") == Has("x")
    with pytest.raises(SelectorSyntaxError):
        parse_selector("all")
    with pytest.raises(SelectorSyntaxError):
        parse_selector("has x")


# --- matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('role == "web"', {"role": "web"}, True),
        ('role == "web"', {"role": "db"}, False),
        ('role == "web"', {}, False),
        ('role != "web"', {"role": "web"}, False),
        ('role != "web"', {"role": "db"}, True),
        ('role != "web"', {}, True),
        ('role in {"web", "db"}', {"role": "db"}, True),
        ('role in {"web", "db"}', {"role": "cache"}, False),
        ('role in {"web", "db"}', {}, False),
        ('role not in {"web", "db"}', {"role": "db"}, False),
        ('role not in {"web", "db"}', {"role": "cache"}, True),
        ('role not in {"web", "db"}', {}, True),
        ("has(role)", {"role": ""}, True),
        ("has(role)", {"other": "x"}, False),
        ("!has(role)", {}, True),
        ("all()", {}, True),
        ("all()", {"a": "b"}, True),
        ("!all()", {"a": "b"}, False),
        ('role == ""', {"role": ""}, True),
        ('role == ""', {}, False),
        ('a == "1" || b == "2" && c == "3"', {"a": "1"}, True),
        ('a == "1" || b == "2" && c == "3"', {"b": "2"}, False),
        ('a == "1" || b == "2" && c == "3"', {"b": "2", "c": "3"}, True),
        ('(a == "1" || b == "2") && c == "3"', {"a": "1"}, False),
        ('(a == "1" || b == "2") && c == "3"', {"a": "1", "c": "3"}, True),
        ('!(a == "1" || b == "2")', {"b": "2"}, False),
        ('!(a == "1" || b == "2")', {"c": "3"}, True),
    ],
)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_keys() -> None:
    selector = parse_selector('a == "1" || !(b in {"x"} && has(c)) || d.io/e not in {"y"} || all()')
    assert selector.keys == {"a", "b", "c", "d.io/e"}
    assert parse_selector("all()").keys == frozenset()


def test_selector_equality_ignores_text() -> None:
    a = parse_selector('a=="1"')
    b = parse_selector('a == "1"')
    c = parse_selector("a == '1'")
    assert a == b == c
    assert len({a, b, c}) == 1
    assert a != parse_selector('a == "2"')
    assert Selector("anything", Eq("a", "1")) == a
    assert str(a) == 'a=="1"'


def test_parse_is_cached() -> None:
    assert parse_selector('x == "cached"') is parse_selector('x == "cached"')


def test_node_invariants() -> None:
    with pytest.raises(ValueError):
        In("a", frozenset())
    with pytest.raises(ValueError):
        NotIn("a", frozenset())
    with pytest.raises(ValueError):
        And((All(),))
    with pytest.raises(ValueError):
        Or(())


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "expected", "found"),
    [
        ("role ==", 7, STRING, END),
        ("role == web", 8, STRING, "web"),
        ("role in {}", 9, STRING, "}"),
        ('role in {"a",}', 13, STRING, "}"),
        ('role in {"a" "b"}', 13, "',' or '}'", '"b"'),
        ('role in "a"', 8, "'{'", '"a"'),
        ('role in {"a"', 12, "',' or '}'", END),
        ('(a == "1"', 9, AFTER_TERM_IN_PARENS, END),
        ('(a == "1" b', 10, AFTER_TERM_IN_PARENS, "b"),
        ('a == "1" &&', 11, TERM_START, END),
        ('a == "1" ||', 11, TERM_START, END),
        ("has(a", 5, "')'", END),
        ("has()", 4, "a label key", ")"),
        ("all(x)", 4, "')'", "x"),
        ('a === "b"', 4, STRING, "="),
        ('a = "b"', 2, OPERATOR, "="),
        ('a == "1" b == "2"', 9, AFTER_TERM, "b"),
        ('a == "1")', 8, AFTER_TERM, ")"),
        ('a == "1" & b == "2"', 9, AFTER_TERM, "&"),
        ('a == "1" | b == "2"', 9, AFTER_TERM, "|"),
        ("", 0, TERM_START, END),
        ("   ", 3, TERM_START, END),
        ("!", 1, TERM_START, END),
        ("()", 1, TERM_START, ")"),
        ("role", 4, OPERATOR, END),
        ("  role == ", 10, STRING, END),
        ('role not {"a"}', 9, "'in'", "{"),
        ('role notin {"a"}', 5, OPERATOR, "notin"),
        ('"web" == role', 0, TERM_START, '"web"'),
        ('role == "web', 12, "a closing '\"'", END),
        ("role == 'web", 12, 'a closing "\'"', END),
        ('role @ "x"', 5, OPERATOR, "@"),
    ],
)
def test_syntax_errors(text: str, position: int, expected: str, found: str) -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector(text)
    error = info.value
    assert (error.text, error.position, error.expected, error.found) == (
        text,
        position,
        expected,
        found,
    )
    assert str(error) == f"at position {position}: expected {expected}, found {found!r}"
    assert isinstance(error, ValueError)


def test_error_message_format() -> None:
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector("role == web")
    assert str(info.value) == "at position 8: expected a quoted string, found 'web'"


def test_nesting_is_limited() -> None:
    deep = "(" * MAX_DEPTH + "all()" + ")" * MAX_DEPTH
    assert sel(deep) == All()
    assert sel("!" * MAX_DEPTH + "all()") is not None
    with pytest.raises(SelectorSyntaxError) as info:
        parse_selector("(" * (MAX_DEPTH + 1) + "all()" + ")" * (MAX_DEPTH + 1))
    assert info.value.position == MAX_DEPTH
    with pytest.raises(SelectorSyntaxError):
        parse_selector("!" * 10_000 + "all()")


# --- canonical form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a=='1'", 'a == "1"'),
        ("a!='1'", 'a != "1"'),
        ("a in {'z','b','m'}", 'a in {"b", "m", "z"}'),
        ("a not  in {'z','b'}", 'a not in {"b", "z"}'),
        ("has( a )", "has(a)"),
        ("all( )", "all()"),
        ("!has(a)", "!has(a)"),
        ("!all()", "!all()"),
        ("!a=='1'", '!(a == "1")'),
        ("!!a=='1'", '!!(a == "1")'),
        ("a=='1'||b=='2'&&c=='3'", 'a == "1" || b == "2" && c == "3"'),
        ("(a=='1'||b=='2')&&c=='3'", '(a == "1" || b == "2") && c == "3"'),
        ("(a=='1'&&b=='2')&&c=='3'", '(a == "1" && b == "2") && c == "3"'),
        ("a=='1'||(b=='2'||c=='3')", 'a == "1" || (b == "2" || c == "3")'),
        ("!(a=='1'&&b=='2')", '!(a == "1" && b == "2")'),
        (r"a == 'q\"\\'", r'a == "q\"\\"'),
        ("a == 'it\\'s'", 'a == "it\'s"'),
    ],
)
def test_canonical(text: str, canonical: str) -> None:
    selector = parse_selector(text)
    assert selector.canonical() == canonical
    assert parse_selector(canonical) == selector


@settings(max_examples=200)
@given(any_nodes)
def test_canonical_round_trips(root: Node) -> None:
    text = render(root)
    reparsed = parse_selector(text)
    assert reparsed.root == root
    assert reparsed.canonical() == text


small_keys = st.sampled_from(["a", "b", "in"])
small_values = st.sampled_from(["1", "2", ""])


def reference(node: Node, labels: dict[str, str]) -> bool:
    """The documented semantics, spelled out independently of the nodes' own `matches`."""
    if isinstance(node, All):
        return True
    if isinstance(node, Has):
        return node.key in labels
    if isinstance(node, Eq | In):
        wanted = {node.value} if isinstance(node, Eq) else node.values
        return node.key in labels and labels[node.key] in wanted
    if isinstance(node, Ne | NotIn):
        unwanted = {node.value} if isinstance(node, Ne) else node.values
        return node.key not in labels or labels[node.key] not in unwanted
    if isinstance(node, Not):
        return not reference(node.operand, labels)
    results = [reference(op, labels) for op in node.operands]
    return all(results) if isinstance(node, And) else any(results)


@settings(max_examples=300)
@given(nodes(small_keys, small_values), st.dictionaries(small_keys, small_values))
def test_matches_follows_the_semantics(root: Node, labels: dict[str, str]) -> None:
    selector = parse_selector(render(root))
    assert selector.matches(labels) == reference(root, labels)


# --- fuzz --------------------------------------------------------------------------------

soup = st.lists(
    st.sampled_from(
        [
            *("a", "b.io/c", "in", "not", "has", "all", "(", ")", "{", "}", ",", '"x"', "'y'"),
            *("==", "!=", "!", "&&", "||", " ", '"', "'", "\\", "=", "|", "&", "\n", "é"),
        ]
    ),
    max_size=20,
).map("".join)


def _parses_or_reports(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorSyntaxError as error:
        assert error.text == text
        assert 0 <= error.position <= len(text)
        assert error.expected
    else:
        assert parse_selector(selector.canonical()) == selector


@settings(max_examples=500)
@given(st.text(max_size=40))
def test_arbitrary_text_raises_only_syntax_errors(text: str) -> None:
    _parses_or_reports(text)


@settings(max_examples=1000)
@given(soup)
def test_token_soup_raises_only_syntax_errors(text: str) -> None:
    _parses_or_reports(text)


@settings(max_examples=300)
@given(
    any_nodes, st.integers(min_value=0), st.integers(min_value=0, max_value=3), st.text(max_size=3)
)
def test_damaged_selectors_raise_only_syntax_errors(
    root: Node, at: int, cut: int, insert: str
) -> None:
    text = render(root)
    at %= len(text) + 1
    _parses_or_reports(text[:at] + insert + text[at + cut :])
