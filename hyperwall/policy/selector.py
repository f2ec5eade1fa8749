"""Label selectors: parse the selector language of `docs/policy.md` (section 3) and match it
against labels.

A selector such as `role == "web" && env in {"prod", "stage"}` is tokenized, parsed by a
small recursive-descent parser into a tree of frozen nodes, and wrapped in a `Selector`
that matches one workload's labels. Matching a whole fleet at once, and keeping the result
current as labels change, is the job of the counterpart module `selector_index`.

Grammar (whitespace between tokens is free):

    expr  := or
    or    := and ("||" and)*
    and   := not ("&&" not)*
    not   := "!" not | "(" expr ")" | term
    term  := KEY "==" STR | KEY "!=" STR | KEY "in" SET | KEY "not" "in" SET
           | "has" "(" KEY ")" | "all" "(" ")"
    SET   := "{" STR ("," STR)* "}"
    STR   := "..." | '...'        (inside, \\" \\' and \\\\ are escapes)
    KEY   := [A-Za-z0-9_./-]+     (`in`, `has`, `all` and `not` are keys too)

A label the workload lacks makes `==` and `in` false and `!=` and `not in` true.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, NoReturn, TypeAlias

MAX_DEPTH = 100  # nesting of "(" and "!" the parser accepts
MAX_LENGTH = 1024  # characters; parsing costs ~50 bytes of memory per character, and the
# cache below keeps up to 4096 parsed selectors (~16 bytes per character each)


class SelectorSyntaxError(ValueError):
    """A selector text that is not in the grammar; says where, what was expected and found."""

    def __init__(self, text: str, position: int, expected: str, found: str) -> None:
        self.text = text
        self.position = position  # 0-based character offset into `text`
        self.expected = expected  # e.g. "a quoted string"
        self.found = found  # the offending token's text, or "end of selector"
        super().__init__(f"at position {position}: expected {expected}, found {found!r}")


# --- syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class All:
    """`all()`: every workload."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Eq:
    """`key == "value"`."""

    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) == self.value


@dataclass(frozen=True, slots=True)
class Ne:
    """`key != "value"` (true when the label is missing)."""

    key: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) != self.value


@dataclass(frozen=True, slots=True)
class In:
    """`key in {"a", "b"}`."""

    key: str
    values: frozenset[str]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a set of values must not be empty")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) in self.values


@dataclass(frozen=True, slots=True)
class NotIn:
    """`key not in {"a", "b"}` (true when the label is missing)."""

    key: str
    values: frozenset[str]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a set of values must not be empty")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get(self.key) not in self.values


@dataclass(frozen=True, slots=True)
class Has:
    """`has(key)`."""

    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels


@dataclass(frozen=True, slots=True)
class Not:
    """`!operand`."""

    operand: Node

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)


@dataclass(frozen=True, slots=True)
class And:
    """`a && b && ...` (two or more operands, kept as written: no flattening)."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("'&&' needs at least two operands")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(op.matches(labels) for op in self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    """`a || b || ...` (two or more operands, kept as written: no flattening)."""

    operands: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("'||' needs at least two operands")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(op.matches(labels) for op in self.operands)


Node: TypeAlias = All | Eq | Ne | In | NotIn | Has | Not | And | Or


def node_keys(node: Node) -> frozenset[str]:
    """Every label key `node` mentions."""
    match node:
        case All():
            return frozenset()
        case Eq(key=key) | Ne(key=key) | In(key=key) | NotIn(key=key) | Has(key=key):
            return frozenset((key,))
        case Not(operand):
            return node_keys(operand)
        case And(operands) | Or(operands):
            return frozenset().union(*(node_keys(op) for op in operands))


def render(node: Node) -> str:
    """The canonical text of `node`: one space around operators, sets sorted, "" quotes."""
    match node:
        case All():
            return "all()"
        case Eq(key, value):
            return f"{key} == {_quote(value)}"
        case Ne(key, value):
            return f"{key} != {_quote(value)}"
        case In(key, values):
            return f"{key} in {_render_set(values)}"
        case NotIn(key, values):
            return f"{key} not in {_render_set(values)}"
        case Has(key):
            return f"has({key})"
        case Not(operand):
            inner = render(operand)
            return f"!{inner}" if isinstance(operand, All | Has | Not) else f"!({inner})"
        case And(operands):
            return " && ".join(
                f"({render(op)})" if isinstance(op, And | Or) else render(op) for op in operands
            )
        case Or(operands):
            return " || ".join(
                f"({render(op)})" if isinstance(op, Or) else render(op) for op in operands
            )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_set(values: frozenset[str]) -> str:
    return "{" + ", ".join(_quote(v) for v in sorted(values)) + "}"


# --- selector ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector. Equal when the trees are equal, whatever the original spacing."""

    text: str = field(compare=False)  # the text as written
    root: Node
    keys: frozenset[str] = field(init=False, compare=False, repr=False)  # keys it mentions
    _canonical: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", node_keys(self.root))
        object.__setattr__(self, "_canonical", render(self.root))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a workload with these labels is selected."""
        return self.root.matches(labels)

    def canonical(self) -> str:
        """Normalized text; `parse_selector(s.canonical()) == s` (computed once)."""
        return self._canonical

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=4096)
def parse_selector(text: str) -> Selector:
    """Parse selector text; raises `SelectorSyntaxError` (also for a text longer than
    `MAX_LENGTH`, refused before any parsing)."""
    if len(text) > MAX_LENGTH:
        raise SelectorSyntaxError(
            text[:40] + "...", MAX_LENGTH, f"at most {MAX_LENGTH} characters", "more"
        )
    return Selector(text, _Parser(text).parse())


# --- tokenizer ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<op>\|\||&&|==|!=|[!(){},])
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<key>[A-Za-z0-9_./-]+)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"""\\(["'\\])""")
_END = "end of selector"


class _Token(NamedTuple):
    kind: str  # an operator's own text, "str", "key", "end", "unclosed" (string) or "bad"
    text: str  # as written
    pos: int


def _tokenize(text: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] in "\"'":
                yield _Token("unclosed", text[pos:], pos)
                return
            yield _Token("bad", text[pos], pos)
            pos += 1
            continue
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            yield _Token(m[0] if kind == "op" else kind, m[0], pos)
        pos = m.end()
    yield _Token("end", _END, len(text))


# --- parser ------------------------------------------------------------------------------

_AFTER_TERM = "'&&', '||' or end of selector"
_AFTER_TERM_IN_PARENS = "'&&', '||' or ')'"
_TERM_START = "a label key, 'has(', 'all()', '!' or '('"
_OPERATOR = "'==', '!=', 'in' or 'not in'"
_STRING = "a quoted string"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokenize(text))
        self.i = 0
        self.depth = 0

    def parse(self) -> Node:
        node = self.or_()
        if self.peek().kind != "end":
            self.fail(_AFTER_TERM)
        return node

    # one method per grammar rule

    def or_(self) -> Node:
        operands = [self.and_()]
        while self.accept("||"):
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_(self) -> Node:
        operands = [self.not_()]
        while self.accept("&&"):
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_(self) -> Node:
        tok = self.peek()
        if tok.kind in ("!", "("):
            if self.depth >= MAX_DEPTH:
                self.fail(f"at most {MAX_DEPTH} levels of '!' and '('")
            self.depth += 1
            self.i += 1
            if tok.kind == "!":
                node: Node = Not(self.not_())
            else:
                node = self.or_()
                self.expect(")", _AFTER_TERM_IN_PARENS)
            self.depth -= 1
            return node
        return self.term()

    def term(self) -> Node:
        tok = self.expect("key", _TERM_START)
        if tok.text in ("has", "all") and self.accept("("):
            if tok.text == "all":
                self.expect(")", "')'")
                return All()
            key = self.expect("key", "a label key").text
            self.expect(")", "')'")
            return Has(key)
        key = tok.text
        op = self.peek()
        if op.kind in ("==", "!="):
            self.i += 1
            value = self.string()
            return Eq(key, value) if op.kind == "==" else Ne(key, value)
        if op.kind == "key" and op.text == "in":
            self.i += 1
            return In(key, self.set_())
        if op.kind == "key" and op.text == "not":
            self.i += 1
            if not (self.peek().kind == "key" and self.peek().text == "in"):
                self.fail("'in'")
            self.i += 1
            return NotIn(key, self.set_())
        self.fail(_OPERATOR)

    def set_(self) -> frozenset[str]:
        self.expect("{", "'{'")
        values = [self.string()]
        while not self.accept("}"):
            self.expect(",", "',' or '}'")
            values.append(self.string())
        return frozenset(values)

    def string(self) -> str:
        tok = self.peek()
        if tok.kind == "unclosed":
            raise SelectorSyntaxError(self.text, len(self.text), f"a closing {tok.text[0]!r}", _END)
        return _ESCAPE.sub(r"\1", self.expect("str", _STRING).text[1:-1])

    # token helpers

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def accept(self, kind: str) -> bool:
        if self.peek().kind == kind:
            self.i += 1
            return True
        return False

    def expect(self, kind: str, expected: str) -> _Token:
        tok = self.peek()
        if tok.kind != kind:
            self.fail(expected)
        self.i += 1
        return tok

    def fail(self, expected: str) -> NoReturn:
        tok = self.peek()
        raise SelectorSyntaxError(self.text, tok.pos, expected, tok.text)
