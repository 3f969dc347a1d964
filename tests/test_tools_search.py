"""glob and grep."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server import tools
from server.tools import grep
from server.tools.base import ToolContext, ToolSettings


def call(name: str, input: dict[str, Any], work_dir: Any, **settings: Any) -> tools.ToolOutcome:
    ctx = ToolContext(str(work_dir), "s1", "r1", ToolSettings(**settings))
    return asyncio.run(tools.call(name, input, ctx))


def ok(outcome: tools.ToolOutcome) -> list[str]:
    assert not outcome.is_error, outcome.content
    return outcome.content.splitlines()


def error(outcome: tools.ToolOutcome) -> str:
    assert outcome.is_error, outcome.content
    return outcome.content


FILES = {
    "setup.py": "import os\n",
    "README.md": "# Title\nTODO: write docs\n",
    "src/app.py": "def main():\n    return 1  # TODO\n",
    "src/app.ts": "let todo = 1\r\n",
    "src/lib/util.py": "def helper():\n    pass\n",
    "src/lib/b1.py": "",
    "src/lib/bx.py": "",
    ".git/config": "TODO in git\n",
}


@pytest.fixture
def tree(tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / "linked").symlink_to("src")
    return tmp_path


# glob


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "**/*.py",
            ["setup.py", "src/app.py", "src/lib/b1.py", "src/lib/bx.py", "src/lib/util.py"],
        ),
        ("*.py", ["setup.py"]),
        ("src/*.py", ["src/app.py"]),
        ("./src/*", ["src/app.py", "src/app.ts", "src/lib/"]),
        (
            "src/**",
            [
                "src/app.py",
                "src/app.ts",
                "src/lib/",
                "src/lib/b1.py",
                "src/lib/bx.py",
                "src/lib/util.py",
            ],
        ),
        ("src/lib/b[0-9].py", ["src/lib/b1.py"]),
        ("src/lib/b[!0-9].py", ["src/lib/bx.py"]),
        ("src/lib/b?.py", ["src/lib/b1.py", "src/lib/bx.py"]),
        ("**/lib", ["src/lib/"]),
        ("linked/*.ts", ["linked/app.ts"]),
        ("src/app.py", ["src/app.py"]),
    ],
)
def test_glob_matches(tree, pattern, expected):
    assert ok(call("glob", {"pattern": pattern}, tree)) == expected


def test_glob_without_matches(tree):
    assert ok(call("glob", {"pattern": "**/*.rs"}, tree)) == ["no files match '**/*.rs'"]
    assert ok(call("glob", {"pattern": "nope/*.py"}, tree)) == ["no files match 'nope/*.py'"]
    assert ok(call("glob", {"pattern": "setup.py/*"}, tree)) == ["no files match 'setup.py/*'"]


def test_glob_is_capped(tree):
    lines = ok(call("glob", {"pattern": "**/*.py"}, tree, list_max_entries=2))
    assert lines == [
        "setup.py",
        "src/app.py",
        "[truncated: showing the first 2 matches; narrow the pattern]",
    ]


@pytest.mark.parametrize("pattern", ["/etc/*", "../*", "src/../../x", "**/.."])
def test_glob_refuses_patterns_reaching_out(tree, pattern):
    assert f"path {pattern!r} is outside the session's work_dir" in error(
        call("glob", {"pattern": pattern}, tree)
    )


# grep


def test_grep_reports_path_line_and_text_skipping_git(tree):
    assert ok(call("grep", {"pattern": "TODO"}, tree)) == [
        "README.md:2: TODO: write docs",
        "src/app.py:2:     return 1  # TODO",
    ]


def test_grep_regex_glob_and_path(tree):
    assert ok(call("grep", {"pattern": "(?i)todo", "glob": "*.ts"}, tree)) == [
        "src/app.ts:1: let todo = 1"
    ]
    assert ok(call("grep", {"pattern": r"^def \w+\(\):$", "path": "src/lib"}, tree)) == [
        "src/lib/util.py:1: def helper():"
    ]
    assert ok(call("grep", {"pattern": "1$", "path": "src/app.ts"}, tree)) == [
        "src/app.ts:1: let todo = 1"
    ]


def test_grep_no_matches_and_invalid_regex(tree):
    assert ok(call("grep", {"pattern": "nothing here"}, tree)) == [
        "no matches for 'nothing here' in '.'"
    ]
    message = error(call("grep", {"pattern": "def ("}, tree))
    assert message.startswith("invalid regular expression 'def (': missing )")
    assert (
        error(call("grep", {"pattern": "x", "path": "nope"}, tree))
        == "no such file or folder: 'nope'"
    )


def test_grep_is_capped(tree):
    lines = ok(call("grep", {"pattern": "."}, tree, grep_max_matches=3))
    assert len(lines) == 4
    assert lines[3] == "[stopped after 3 matches; narrow the pattern, path or glob]"


def test_grep_skips_binary_and_large_files(tree, monkeypatch):
    (tree / "blob.bin").write_bytes(b"TODO\x00\x01")
    (tree / "big.txt").write_text("TODO\n" * 100)
    monkeypatch.setattr(grep, "MAX_FILE_BYTES", 100)
    assert ok(call("grep", {"pattern": "TODO"}, tree)) == [
        "README.md:2: TODO: write docs",
        "src/app.py:2:     return 1  # TODO",
        "[skipped 2 binary, large or unreadable files]",
    ]


def test_grep_clips_long_lines(tmp_path):
    (tmp_path / "min.js").write_text("x" * 1000 + "NEEDLE\n")
    (line,) = ok(call("grep", {"pattern": "NEEDLE"}, tmp_path))
    assert line == "min.js:1: " + "x" * grep.MAX_LINE_CHARS + " […]"


def test_glob_skips_a_symlink_that_loops_and_says_so(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.txt").write_text("b\n")
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "self").symlink_to("self")
    (tmp_path / "sub/ring").symlink_to("ring")
    assert ok(call("glob", {"pattern": "**/*"}, tmp_path)) == [
        "a.txt",
        "sub/",
        "sub/b.txt",
        "[skipped 2 symbolic links that cannot be followed (a loop, or no access): "
        "'self', 'sub/ring']",
    ]
    assert ok(call("glob", {"pattern": "s*"}, tmp_path)) == [
        "sub/",
        "[skipped 1 symbolic link that cannot be followed (a loop, or no access): 'self']",
    ]
    assert ok(call("glob", {"pattern": "self"}, tmp_path)) == [
        "no files match 'self'",
        "[skipped 1 symbolic link that cannot be followed (a loop, or no access): 'self']",
    ]


FORGING = "x.txt\nforged.py"


@pytest.fixture
def forged(tmp_path):
    (tmp_path / FORGING).write_text("needle\n")
    (tmp_path / "'quoted'").write_text("needle\n")
    (tmp_path / "plain.txt").write_text("needle\n")
    (tmp_path / "tab\there").write_text("needle\n")
    return tmp_path


def test_glob_quotes_names_that_would_forge_lines(forged):
    assert ok(call("glob", {"pattern": "*"}, forged)) == [
        "\"'quoted'\"",
        "plain.txt",
        "'tab\\there'",
        "'x.txt\\nforged.py'",
    ]


def test_grep_quotes_names_that_would_forge_lines(forged):
    assert ok(call("grep", {"pattern": "needle"}, forged)) == [
        "\"'quoted'\":1: needle",
        "plain.txt:1: needle",
        "'tab\\there':1: needle",
        "'x.txt\\nforged.py':1: needle",
    ]
