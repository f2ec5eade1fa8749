"""Tests for `hyperwall.io.files`: reading documents from YAML/JSON files and folders.

Folders are read recursively in sorted order; YAML files may hold several documents,
numbered from 1 (an empty document takes a number but yields nothing); a JSON file holds an
object or a list. Syntax errors (with line and column), duplicate keys and missing paths
become issues like any validation error. Every file is written under `tmp_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperwall.io.files import decode_text, expand_paths, load_catalog, read_documents
from hyperwall.policy.errors import DocumentsInvalid, Source

TENANT = "apiVersion: hyperwall.io/v1\nkind: Tenant\nmetadata: {name: %s}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- folders -----------------------------------------------------------------------------


def test_folder_is_read_recursively_and_sorted(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "b: 1\n")
    write(tmp_path / "a" / "z.yml", "az: 1\n")
    write(tmp_path / "a" / "deeper" / "c.json", '{"adc": 1}')
    write(tmp_path / "a.json", '{"a": 1}')
    write(tmp_path / "c" / "d.yaml", "cd: 1\n")
    write(tmp_path / "notes.txt", "txt: 1\n")
    write(tmp_path / "README.md", "# not a document\n")
    write(tmp_path / "backup.yaml.orig", "orig: 1\n")
    files, issues = expand_paths([tmp_path])
    assert issues == []
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/deeper/c.json",
        "a/z.yml",
        "a.json",
        "b.yaml",
        "c/d.yaml",
    ]
    docs, issues = read_documents([tmp_path])
    assert issues == []
    assert [next(iter(doc)) for doc, _ in docs] == ["adc", "az", "a", "b", "cd"]
    assert docs[3][1] == Source(str(tmp_path / "b.yaml"), 1)


def test_empty_folder_and_folder_without_documents(tmp_path: Path) -> None:
    assert read_documents([tmp_path]) == ([], [])
    write(tmp_path / "x.txt", "a: 1\n")
    assert read_documents([tmp_path]) == ([], [])


def test_explicit_files_are_read_whatever_their_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "policy.txt", "a: 1\n")
    assert read_documents([path]) == ([({"a": 1}, Source(str(path), 1))], [])


def test_several_paths_in_the_order_given(tmp_path: Path) -> None:
    second = write(tmp_path / "1.yaml", "first: 1\n")
    first = write(tmp_path / "2.yaml", "second: 1\n")
    docs, _ = read_documents([first, str(second)])
    assert [d for d, _ in docs] == [{"second": 1}, {"first": 1}]


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    files, issues = expand_paths([missing, tmp_path])
    assert files == []
    [issue] = issues
    assert issue.source.file == str(missing)
    assert "no such file or folder" in issue.message


def test_unreadable_file_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    docs, issues = read_documents([path])
    assert docs == []
    [issue] = issues
    assert issue.source.file == str(path)
    assert "cannot read" in issue.message


# --- YAML documents ----------------------------------------------------------------------


def test_multi_document_numbering_with_empty_documents() -> None:
    text = "# a comment before the first separator is not a document\n---\na: 1\n---\n---\n"
    text += "# only a comment\n---\nb: 2\n---\nc: 3\n"
    docs, issues = decode_text(text, "x.yaml")
    assert issues == []
    assert docs == [
        ({"a": 1}, Source("x.yaml", 1)),
        ({"b": 2}, Source("x.yaml", 4)),
        ({"c": 3}, Source("x.yaml", 5)),
    ]


def test_single_document_without_separator() -> None:
    assert decode_text("a: 1\n", "x.yaml") == ([({"a": 1}, Source("x.yaml", 1))], [])


def test_empty_file() -> None:
    assert decode_text("", "x.yaml") == ([], [])
    assert decode_text("# nothing here\n", "x.yaml") == ([], [])


def test_non_mapping_documents_are_passed_on() -> None:
    docs, issues = decode_text("---\n- a\n---\njust text\n", "x.yaml")
    assert issues == []
    assert docs == [(["a"], Source("x.yaml", 1)), ("just text", Source("x.yaml", 2))]


def test_yaml_syntax_error_has_line_and_column() -> None:
    docs, issues = decode_text("a: 1\n---\nb: [1,\n  c: d: e\n", "x.yaml")
    assert docs == [({"a": 1}, Source("x.yaml", 1))]
    [issue] = issues
    assert issue.source == Source("x.yaml", 2)
    assert "YAML syntax error" in issue.message
    assert "line 4, column" in issue.message


def test_yaml_syntax_error_in_first_document() -> None:
    docs, issues = decode_text("kind: Tenant\nmetadata: name: acme\n", "x.yaml")
    assert docs == []
    [issue] = issues
    assert issue.source == Source("x.yaml", 1)
    assert "line 2, column 15" in issue.message
    assert "mapping values are not allowed" in issue.message


def test_duplicate_yaml_key_is_refused() -> None:
    docs, issues = decode_text("kind: Tenant\nkind: Group\n", "x.yaml")
    assert docs == []
    [issue] = issues
    assert issue.source == Source("x.yaml", 1)
    assert "duplicate key 'kind'" in issue.message
    assert "line 2, column 1" in issue.message


def test_duplicate_nested_yaml_key_in_a_later_document() -> None:
    text = "a: 1\n---\nmetadata:\n  name: x\n  labels: {role: web, role: db}\n"
    docs, issues = decode_text(text, "x.yaml")
    assert docs == [({"a": 1}, Source("x.yaml", 1))]
    [issue] = issues
    assert issue.source == Source("x.yaml", 2)
    assert "duplicate key 'role'" in issue.message
    assert "line 5" in issue.message


def test_unquoted_mac_is_a_number_and_quoted_one_a_string() -> None:
    docs, _ = decode_text('a: 52:54:00:01:00:10\nb: "52:54:00:01:00:10"\n', "x.yaml")
    assert isinstance(docs[0][0]["a"], int)
    assert docs[0][0]["b"] == "52:54:00:01:00:10"


# --- JSON --------------------------------------------------------------------------------


def test_json_single_object() -> None:
    assert decode_text('{"kind": "Tenant"}', "x.json") == (
        [({"kind": "Tenant"}, Source("x.json", 1))],
        [],
    )


def test_json_list_of_documents() -> None:
    docs, issues = decode_text(json.dumps([{"a": 1}, {"b": 2}, {"c": 3}]), "x.json")
    assert issues == []
    assert [s.document for _, s in docs] == [1, 2, 3]
    assert [d for d, _ in docs] == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_json_syntax_error() -> None:
    docs, issues = decode_text('{"kind": "Tenant",\n "metadata": }', "x.json")
    assert docs == []
    [issue] = issues
    assert issue.source == Source("x.json", 1)
    assert "JSON syntax error" in issue.message
    assert "line 2 column" in issue.message


def test_duplicate_json_key_is_refused() -> None:
    docs, issues = decode_text('{"kind": "Tenant", "kind": "Group"}', "x.json")
    assert docs == []
    assert len(issues) == 1
    assert "duplicate key 'kind'" in issues[0].message


# --- load_catalog ------------------------------------------------------------------------


def test_load_catalog_from_yaml_and_json(tmp_path: Path) -> None:
    write(tmp_path / "t.yaml", "---\n" + TENANT % "acme" + "---\n---\n" + TENANT % "globex")
    write(
        tmp_path / "more" / "s.json",
        json.dumps(
            [
                {
                    "apiVersion": "hyperwall.io/v1",
                    "kind": "Service",
                    "metadata": {"name": "https"},
                    "spec": {"ports": ["tcp/443"]},
                }
            ]
        ),
    )
    catalog = load_catalog([tmp_path])
    assert sorted(catalog.config.tenants) == ["acme", "globex"]
    assert list(catalog.config.services) == ["https"]


def test_load_catalog_reports_file_and_validation_issues_together(tmp_path: Path) -> None:
    bad_yaml = write(tmp_path / "a.yaml", "kind: [\n")
    bad_doc = write(tmp_path / "b.yaml", TENANT % "acme" + "---\n---\n" + TENANT % "Globex")
    missing = tmp_path / "missing"
    with pytest.raises(DocumentsInvalid) as info:
        load_catalog([tmp_path, missing])
    found = {(i.source.file, i.source.document, i.path) for i in info.value.issues}
    assert found == {
        (str(bad_yaml), 1, ""),
        (str(bad_doc), 3, "metadata.name"),
        (str(missing), 0, ""),
    }


def test_load_catalog_refuses_a_set_whose_only_problem_is_a_file(tmp_path: Path) -> None:
    write(tmp_path / "ok.yaml", TENANT % "acme")
    write(tmp_path / "dup.yaml", TENANT % "globex" + "metadata: {name: initech}\n")
    with pytest.raises(DocumentsInvalid) as info:
        load_catalog([tmp_path])
    [issue] = info.value.issues
    assert issue.source == Source(str(tmp_path / "dup.yaml"), 1)
    assert "duplicate key 'metadata'" in issue.message
