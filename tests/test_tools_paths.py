"""Confinement: no tool reaches outside the session's work_dir, however the path is built."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from server import tools
from server.errors import ToolError
from server.tools import paths
from server.tools.base import ToolContext


@pytest.fixture
def work(tmp_path):
    """work/ with attack symlinks, next to outside/ holding a secret."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "ok.txt").write_text("fine\n")
    (work / "rootlink").symlink_to("/")
    (work / "outdir").symlink_to(outside)
    (work / "leak.txt").symlink_to(outside / "secret.txt")
    (work / "loop").symlink_to("loop2")
    (work / "loop2").symlink_to("loop")
    (work / "inner").symlink_to("ok.txt")
    return work


def call(name: str, input: dict[str, Any], work_dir: Any) -> tools.ToolOutcome:
    return asyncio.run(tools.call(name, input, ToolContext(str(work_dir), "s1", "r1")))


ATTACKS = [
    ("../outside/secret.txt", "is outside the session's work_dir"),
    ("a/../../outside/secret.txt", "is outside the session's work_dir"),
    ("/etc/passwd", "is outside the session's work_dir"),
    ("rootlink/etc/passwd", "is outside the session's work_dir"),
    ("rootlink", "is outside the session's work_dir"),
    ("outdir/secret.txt", "is outside the session's work_dir"),
    ("leak.txt", "is outside the session's work_dir"),
    ("loop", "cannot be resolved"),
    ("loop/x.txt", "cannot be resolved"),
    ("a\0b", "contains a NUL byte"),
    ("\ud800", "has characters no file name can have"),
    ("x" * 5000, "is too long (5000 characters"),
    ("dir/" + "n" * 300, "has a name longer than 255 bytes"),
]

USES = [
    ("read_file", "path", {}),
    ("list_files", "path", {}),
    ("write_file", "path", {"content": "pwned"}),
    ("edit_file", "path", {"old": "SECRET", "new": "pwned"}),
    ("grep", "path", {"pattern": "SECRET"}),
]


@pytest.mark.parametrize(("attack", "message"), ATTACKS)
@pytest.mark.parametrize(("tool", "field", "rest"), USES)
def test_attack_is_refused_naming_the_path(work, attack, message, tool, field, rest):
    outcome = call(tool, {field: attack, **rest}, work)
    assert outcome.is_error
    assert message in outcome.content
    assert repr(attack[:60]) in outcome.content
    assert (work.parent / "outside" / "secret.txt").read_text() == "SECRET\n"


@pytest.mark.parametrize(
    "pattern",
    ["../outside/*", "/etc/*", "**/../../outside/*", "rootlink/etc/*", "outdir/*", "a\0*"],
)
def test_glob_patterns_reaching_out_are_refused(work, pattern):
    outcome = call("glob", {"pattern": pattern}, work)
    assert outcome.is_error
    assert "outside the session's work_dir" in outcome.content or "NUL" in outcome.content


def test_write_through_symlinked_folder_creates_nothing_outside(work):
    outcome = call("write_file", {"path": "outdir/new/planted.txt", "content": "x"}, work)
    assert outcome.is_error
    assert not (work.parent / "outside" / "new").exists()


def test_walks_do_not_follow_symlinks_out(work):
    listing = call("list_files", {"recursive": True}, work)
    assert not listing.is_error
    assert "rootlink/" in listing.content.splitlines()
    assert "secret.txt" not in listing.content
    assert "rootlink/etc" not in listing.content
    found = call("grep", {"pattern": "SECRET"}, work)
    assert found == tools.ToolOutcome("no matches for 'SECRET' in '.'", False)
    matched = call("glob", {"pattern": "**/*.txt"}, work)
    assert matched.content.splitlines() == ["leak.txt", "ok.txt"]  # names only, not followed


def test_symlink_staying_inside_is_allowed(work):
    assert call("read_file", {"path": "inner"}, work) == tools.ToolOutcome("     1\tfine", False)


def test_work_dir_that_is_itself_a_symlink(tmp_path, work):
    alias = tmp_path / "alias"
    alias.symlink_to(work)
    assert call("read_file", {"path": "./ok.txt"}, alias) == tools.ToolOutcome(
        "     1\tfine", False
    )
    assert call("read_file", {"path": "rootlink/etc/hosts"}, alias).is_error


def test_resolve_returns_the_real_path(work):
    ctx = ToolContext(str(work), "s1", "r1")
    assert paths.resolve(ctx, "inner") == os.path.realpath(work / "ok.txt")
    assert paths.resolve(ctx, "not/yet/there.txt") == os.path.join(
        os.path.realpath(work), "not/yet/there.txt"
    )
    with pytest.raises(ToolError, match="is outside the session's work_dir"):
        paths.resolve(ctx, "outdir/not-there.txt")


def test_missing_work_dir_folder(tmp_path):
    outcome = call("list_files", {}, tmp_path / "gone")
    assert outcome.is_error
    assert "is not an existing folder" in outcome.content


def test_file_names_that_are_not_utf8_come_back_encodable(tmp_path):
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("hello\n")
    for name, input in [("list_files", {}), ("glob", {"pattern": "*"}), ("grep", {"pattern": "h"})]:
        outcome = call(name, input, tmp_path)
        assert outcome.content.startswith("caf\\udce9.txt"), outcome
        outcome.content.encode("utf-8")
    read = call("read_file", {"path": os.fsdecode(b"caf\xe9.txt")}, tmp_path)
    assert read == tools.ToolOutcome("     1\thello", False)
