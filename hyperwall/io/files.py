"""Reads policy documents from YAML/JSON files and folders: the file side of `policy.catalog`.

A folder is read recursively (`*.yaml`, `*.yml`, `*.json`, sorted by path). A YAML file may
hold several documents; a JSON file holds one document or a list of them. Syntax errors and
duplicate mapping keys become `Issue`s like any other validation error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from hyperwall.policy.catalog import build_catalog
from hyperwall.policy.errors import DocumentsInvalid, Issue, Source
from hyperwall.policy.model import Catalog
from hyperwall.policy.values import value_problems

SUFFIXES = (".yaml", ".yml", ".json")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Issue]]:
    files: list[Path] = []
    issues: list[Issue] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            issues.append(Issue(Source(str(path), 0), "", "no such file or folder"))
    return files, issues


def decode_text(text: str, name: str) -> tuple[list[tuple[Any, Source]], list[Issue]]:
    """Decode one file's text into (document, source) pairs, skipping empty documents."""
    found, issues = _decode(text, name)
    ok: list[tuple[Any, Source]] = []
    for doc, source in found:  # what no later stage can hold: NaN, lone surrogates, ...
        problems = value_problems(doc)
        issues += [Issue(source, p.path, p.message, p.expected) for p in problems]
        if not problems:
            ok.append((doc, source))
    return ok, issues


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _decode(text: str, name: str) -> tuple[list[tuple[Any, Source]], list[Issue]]:
    if name.endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_a_number)
        except json.JSONDecodeError as exc:
            return [], [Issue(Source(name, 1), "", f"JSON syntax error: {exc}")]
        except _DuplicateKey as exc:
            return [], [Issue(Source(name, 1), "", f"JSON error: duplicate key {exc.key!r}")]
        except RecursionError:
            return [], [Issue(Source(name, 1), "", "JSON error: nested too deeply")]
        except ValueError as exc:  # NaN, Infinity; integers of over 4,300 digits
            return [], [Issue(Source(name, 1), "", f"JSON error: {exc}")]
        docs = data if isinstance(data, list) else [data]
        return [(doc, Source(name, i + 1)) for i, doc in enumerate(docs)], []
    out: list[tuple[Any, Source]] = []
    number = 0
    try:
        for doc in yaml.load_all(text, Loader=_StrictLoader):
            number += 1
            if doc is not None:
                out.append((doc, Source(name, number)))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return out, [Issue(Source(name, number + 1), "", f"YAML syntax error{where}: {problem}")]
    return out, []


def read_documents(paths: Iterable[str | Path]) -> tuple[list[tuple[Any, Source]], list[Issue]]:
    files, issues = expand_paths(paths)
    docs: list[tuple[Any, Source]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(Issue(Source(str(file), 0), "", f"cannot read: {exc}"))
            continue
        found, problems = decode_text(text, str(file))
        docs.extend(found)
        issues.extend(problems)
    return docs, issues


def load_catalog(paths: Iterable[str | Path]) -> Catalog:
    """Read, validate and resolve the documents under `paths`; raise DocumentsInvalid."""
    docs, issues = read_documents(paths)
    try:
        catalog = build_catalog(docs)
    except DocumentsInvalid as exc:
        raise DocumentsInvalid(issues + exc.issues) from None
    if issues:
        raise DocumentsInvalid(issues)
    return catalog
