"""Decoded JSON/YAML values that the rest of the system can hold: a pure check at the edge.

`json.loads` accepts what later breaks far from the input: a lone surrogate (`"\\ud800"`)
that no UTF-8 encoder (SQLite, a JSON answer, a terminal) can write, `NaN` and `Infinity`,
integers of thousands of digits, strings of megabytes, nesting a recursive walk overflows
on. `value_problems` finds them in a decoded value and names the field of each; the
manager runs it on every request body and the CLI on every document file, so the error
names the field instead of ending in a traceback. Counterparts: `manager/limits.py` (the
request edge), `io/files.py` (the file edge).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hyperwall.policy.errors import join_path

MAX_STRING = 4096  # characters of any one string (selectors, messages: lower, see docs)
MAX_DEPTH = 64  # nesting of lists and mappings; documents need about 8
MAX_INT_DIGITS = 20  # enough for any 64-bit value


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one value at `path` cannot be accepted."""

    path: str
    message: str
    expected: str


def value_problems(value: Any, max_string: int = MAX_STRING, limit: int = 20) -> list[Problem]:
    """Every problem in a decoded value (at most `limit`), each with its field path."""
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack and len(problems) < limit:
        item, path = stack.pop()
        if len(path) > MAX_DEPTH:
            problems.append(
                Problem(join_path(*path[:8]) + "...", "nested too deeply", f"at most {MAX_DEPTH}")
            )
            continue
        if isinstance(item, str):
            problem = string_problem(item, max_string)
            if problem:
                problems.append(Problem(join_path(*path), *problem))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if len(str(abs(item))) > MAX_INT_DIGITS:
                expected = f"at most {MAX_INT_DIGITS} digits"
                problems.append(Problem(join_path(*path), "integer too large", expected))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(Problem(join_path(*path), f"{item} is not a number", "a number"))
        elif isinstance(item, dict):
            for key, sub in reversed(item.items()):
                name = str(key)
                problem = string_problem(name, max_string) if isinstance(key, str) else None
                if problem:
                    problems.append(Problem(join_path(*path), f"a key: {problem[0]}", problem[1]))
                    continue
                stack.append((sub, (*path, name)))
        elif isinstance(item, list):
            stack.extend((sub, (*path, i)) for i, sub in reversed(list(enumerate(item))))
    return problems


def string_problem(text: str, max_length: int = MAX_STRING) -> tuple[str, str] | None:
    """(message, expected) if `text` cannot be stored or shown: too long, or not encodable
    as UTF-8 (a lone surrogate); None if it is fine."""
    if len(text) > max_length:
        return f"text too long ({len(text)} characters)", f"at most {max_length} characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        return (
            f"invalid character U+{ord(bad):04X} at position {exc.start} (a lone surrogate)",
            "valid Unicode text",
        )
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON: expected a finite number")


def strict_loads(text: str | bytes) -> Any:
    """`json.loads` that refuses NaN/Infinity; raises ValueError (with a message) for every
    malformed input, including nesting that overflows the decoder and huge integers."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"JSON syntax error: {exc}") from None
    except ValueError as exc:  # int digits limit, parse_constant
        raise ValueError(str(exc)) from None
