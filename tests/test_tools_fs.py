"""list_files, read_file, write_file, edit_file."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from server import tools
from server.tools.base import ToolContext, ToolSettings


def call(name: str, input: dict[str, Any], work_dir: Any, **settings: Any) -> tools.ToolOutcome:
    ctx = ToolContext(str(work_dir), "s1", "r1", ToolSettings(**settings))
    return asyncio.run(tools.call(name, input, ctx))


def ok(outcome: tools.ToolOutcome) -> str:
    assert not outcome.is_error, outcome.content
    return outcome.content


def error(outcome: tools.ToolOutcome) -> str:
    assert outcome.is_error, outcome.content
    return outcome.content


@pytest.fixture
def tree(tmp_path):
    for name in ["b.txt", "a.txt", "src/main.py", "src/pkg/mod.py", ".git/HEAD", "z/y"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name + "\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


# list_files


def test_list_is_sorted_with_folders_marked(tree):
    assert ok(call("list_files", {}, tree)).splitlines() == [
        ".git/",
        "a.txt",
        "b.txt",
        "empty/",
        "src/",
        "z/",
    ]


def test_list_recursive_is_a_sorted_tree_that_skips_inside_git(tree):
    assert ok(call("list_files", {"recursive": True}, tree)).splitlines() == [
        ".git/",
        "a.txt",
        "b.txt",
        "empty/",
        "src/",
        "src/main.py",
        "src/pkg/",
        "src/pkg/mod.py",
        "z/",
        "z/y",
    ]


def test_list_subfolder_paths_are_relative_to_work_dir(tree):
    assert ok(call("list_files", {"path": "./src/"}, tree)).splitlines() == [
        "src/main.py",
        "src/pkg/",
    ]


def test_list_limit_adds_a_note(tree):
    lines = ok(call("list_files", {"limit": 2}, tree)).splitlines()
    assert lines[:2] == [".git/", "a.txt"]
    assert lines[2].startswith("[truncated: showing the first 2 entries; there are more.")


def test_list_limit_is_capped_by_settings(tree):
    lines = ok(call("list_files", {"limit": 500}, tree, list_max_entries=3)).splitlines()
    assert len(lines) == 4
    assert "raise limit (at most 3)" in lines[3]


def test_list_empty_folder_file_and_missing(tree):
    assert ok(call("list_files", {"path": "empty"}, tree)) == "'empty' is an empty folder"
    assert "is a file, not a folder" in error(call("list_files", {"path": "a.txt"}, tree))
    assert error(call("list_files", {"path": "nope"}, tree)) == "no such file or folder: 'nope'"


# read_file


def test_read_numbers_lines_like_cat_n(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"one\r\ntwo\n\nfour")
    assert ok(call("read_file", {"path": "f.txt"}, tmp_path)) == (
        "     1\tone\n     2\ttwo\n     3\t\n     4\tfour"
    )


def test_read_pages_with_offset_and_limit(tmp_path):
    (tmp_path / "f.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    page = ok(call("read_file", {"path": "f.txt", "offset": 3, "limit": 2}, tmp_path))
    assert page == "     3\tline 3\n     4\tline 4\n[more lines follow; read on with offset=5]"
    last = ok(call("read_file", {"path": "f.txt", "offset": 9}, tmp_path))
    assert last == "     9\tline 9\n    10\tline 10"


def test_read_size_cap_says_how_to_read_on(tmp_path):
    (tmp_path / "f.txt").write_text("".join(f"line {n}\n" for n in range(1, 101)))
    first = ok(call("read_file", {"path": "f.txt"}, tmp_path, read_max_bytes=100))
    *shown, note = first.splitlines()
    assert len("\n".join(shown)) <= 100
    assert (
        note
        == f"[truncated: output reached the 100-byte limit; read on with offset={len(shown) + 1}]"
    )
    more = ok(call("read_file", {"path": "f.txt", "offset": len(shown) + 1}, tmp_path))
    assert more.startswith(f"{len(shown) + 1:6}\tline {len(shown) + 1}\n")


def test_read_cuts_a_line_longer_than_the_cap(tmp_path):
    (tmp_path / "f.txt").write_text("x" * 1000 + "\nnext\n")
    out = ok(call("read_file", {"path": "f.txt"}, tmp_path, read_max_bytes=100))
    first, note = out.splitlines()
    assert first == "     1\t" + "x" * 100
    assert "line 1 is longer than 100 bytes" in note
    assert note.endswith("read on with offset=2]")


def test_read_errors(tmp_path):
    (tmp_path / "bin").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "dir").mkdir()
    assert "'bin' is a binary file" in error(call("read_file", {"path": "bin"}, tmp_path))
    missing = error(call("read_file", {"path": "src/nope.py"}, tmp_path))
    assert missing == "no such file or folder: 'src/nope.py'"
    assert "'dir' is a folder" in error(call("read_file", {"path": "dir"}, tmp_path))
    past = error(call("read_file", {"path": "two.txt", "offset": 5}, tmp_path))
    assert past == "offset 5 is past the end of 'two.txt', which has 2 lines"
    assert ok(call("read_file", {"path": "empty.txt"}, tmp_path)) == "'empty.txt' is empty"


def test_read_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert "is not a regular file" in error(call("read_file", {"path": "pipe"}, tmp_path))


# write_file


def test_write_creates_parent_folders_and_counts_bytes(tmp_path):
    out = ok(call("write_file", {"path": "a/b/c.txt", "content": "héllo\n"}, tmp_path))
    assert out == "wrote 7 bytes to 'a/b/c.txt' (new file)"
    assert (tmp_path / "a/b/c.txt").read_text() == "héllo\n"
    again = ok(call("write_file", {"path": "a/b/c.txt", "content": ""}, tmp_path))
    assert again == "wrote 0 bytes to 'a/b/c.txt' (replaced its previous content)"
    assert (tmp_path / "a/b/c.txt").read_bytes() == b""


def test_write_errors(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "f.txt").write_text("x")
    assert "'dir' is a folder" in error(
        call("write_file", {"path": "dir", "content": ""}, tmp_path)
    )
    through_file = error(call("write_file", {"path": "f.txt/x", "content": ""}, tmp_path))
    assert "'f.txt/x'" in through_file


# edit_file


def test_edit_replaces_the_unique_match(tmp_path):
    (tmp_path / "f.py").write_bytes(b"a = 1\r\nb = 2\r\nc = 3\r\n")
    out = ok(
        call("edit_file", {"path": "f.py", "old": "b = 2", "new": "b = 20\r\nbb = 4"}, tmp_path)
    )
    assert out == "edited 'f.py' at line 2"
    assert (tmp_path / "f.py").read_bytes() == b"a = 1\r\nb = 20\r\nbb = 4\r\nc = 3\r\n"


@pytest.mark.parametrize(
    ("content", "old", "new", "message"),
    [
        ("x = 1\n", "y = 1", "y = 2", "old text not found in 'f.py'"),
        (
            "pass\npass\npass\n",
            "pass",
            "return",
            "old text matches 3 times in 'f.py'; give more context",
        ),
        ("aaa", "aa", "b", "old text matches 2 times in 'f.py'"),
        ("x = 1\n", "x = 1", "x = 1", "old and new are the same text"),
    ],
)
def test_edit_errors(tmp_path, content, old, new, message):
    (tmp_path / "f.py").write_text(content)
    assert message in error(call("edit_file", {"path": "f.py", "old": old, "new": new}, tmp_path))
    assert (tmp_path / "f.py").read_text() == content


def test_edit_refuses_missing_binary_and_non_utf8(tmp_path):
    (tmp_path / "bin").write_bytes(b"a\x00b")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    edit = {"old": "a", "new": "b"}
    assert (
        error(call("edit_file", {"path": "nope", **edit}, tmp_path))
        == "no such file or folder: 'nope'"
    )
    assert "binary" in error(call("edit_file", {"path": "bin", **edit}, tmp_path))
    assert "not UTF-8" in error(call("edit_file", {"path": "latin1.txt", **edit}, tmp_path))


def test_list_quotes_names_that_would_forge_lines(tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b\nsecret.txt").write_text("b\n")
    (tmp_path / "c\u2028d").mkdir()  # a line separator to str.splitlines()
    (tmp_path / "e\rf").write_text("e\n")
    (tmp_path / "'g'").write_text("g\n")
    assert ok(call("list_files", {"recursive": True}, tmp_path)).splitlines() == [
        "\"'g'\"",
        "a.txt",
        "'b\\nsecret.txt'",
        "'c\\u2028d/'",
        "'e\\rf'",
    ]
