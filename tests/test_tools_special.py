"""FIFOs, device nodes and hard links in a work_dir: file tools refuse them, and never block.

A model with run_command can make any of these inside its work_dir: a FIFO that a write
would wait on forever (filling the tool threads of every session), a device node, or a hard
link to a file outside the work_dir (one file under two names, one of them out of reach).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from server import tools
from server.tools.base import ToolContext

DEADLINE_S = 30.0  # for tool calls that answer at once; far longer than any of them needs


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """work/ holding a FIFO and a hard link to outside/secret.txt."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "ok.txt").write_text("fine\n")
    os.mkfifo(work / "pipe")
    os.link(outside / "secret.txt", work / "linked.txt")
    return work


def secret(work: Path) -> str:
    return (work.parent / "outside" / "secret.txt").read_text()


def ctx(work: Path, session: str = "s1") -> ToolContext:
    return ToolContext(str(work), session, "r1")


def drain(fifo: Path) -> None:
    """Open the FIFO's reading end for a moment, which lets a writer blocked in open() on."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with_data = True
        while with_data:
            try:
                with_data = bool(os.read(fd, 65536))
            except BlockingIOError:
                with_data = False
    finally:
        os.close(fd)


async def settle(calls: list[Awaitable[tools.ToolOutcome]], fifo: Path) -> list[Any]:
    """The outcomes of `calls`, which must all be back within DEADLINE_S. Calls still blocked
    then are set free (by opening the FIFO's other end) so that the test ends either way."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        _, pending = await asyncio.wait(tasks, timeout=DEADLINE_S)
        assert not pending, f"{len(pending)} of {len(tasks)} tool calls are blocked"
        return [task.result() for task in tasks]
    finally:
        while not all(task.done() for task in tasks):
            drain(fifo)
            await asyncio.wait(tasks, timeout=0.05)


def run_calls(work: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[tools.ToolOutcome]:
    """The outcomes of `calls`, made one after another."""

    async def go() -> list[tools.ToolOutcome]:
        return [
            (await settle([tools.call(name, input, ctx(work))], work / "pipe"))[0]
            for name, input in calls
        ]

    return asyncio.run(go())


USES = [
    ("read_file", {}),
    ("write_file", {"content": "pwned\n"}),
    ("edit_file", {"old": "SECRET", "new": "pwned"}),
    ("grep", {"pattern": "SECRET"}),
]


@pytest.mark.parametrize(("tool", "rest"), USES)
def test_a_fifo_is_refused_at_once(work, tool, rest):
    [outcome] = run_calls(work, [(tool, {"path": "pipe", **rest})])
    assert outcome.is_error
    assert "'pipe' is not a regular file (it is a named pipe, a FIFO)" in outcome.content


@pytest.mark.parametrize(("tool", "rest"), USES)
def test_a_hard_link_to_a_file_outside_is_refused(work, tool, rest):
    [outcome] = run_calls(work, [(tool, {"path": "linked.txt", **rest})])
    assert outcome.is_error
    assert "'linked.txt' has 2 hard links" in outcome.content
    assert "may be outside the working directory" in outcome.content
    assert "SECRET" not in outcome.content
    assert secret(work) == "SECRET\n"


def test_grep_below_a_folder_skips_hard_links_and_fifos_saying_so(work):
    [found] = run_calls(work, [("grep", {"pattern": "SECRET|fine"})])
    assert found == tools.ToolOutcome(
        "ok.txt:1: fine\n[skipped 1 special or hard-linked files]", False
    )


@pytest.mark.parametrize(("tool", "rest"), USES)
def test_a_character_device_is_refused(work, tool, rest):
    try:  # the same device as /dev/null; making one needs root (CAP_MKNOD)
        os.mknod(work / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node is not permitted here")
    [outcome] = run_calls(work, [(tool, {"path": "null", **rest})])
    assert outcome.is_error
    assert "'null' is not a regular file (it is a character device)" in outcome.content


def test_fifo_calls_do_not_starve_other_tool_calls(work):
    """Many more calls on a FIFO than there are tool threads, then calls in another session:
    every one of them comes back."""

    async def go() -> list[tools.ToolOutcome]:
        blocked = [
            tools.call("write_file", {"path": "pipe", "content": "x"}, ctx(work)) for _ in range(40)
        ]
        blocked += [
            tools.call("edit_file", {"path": "pipe", "old": "a", "new": "b"}, ctx(work))
            for _ in range(10)
        ]
        others = [
            tools.call("read_file", {"path": "ok.txt"}, ctx(work, "s2")),
            tools.call("list_files", {}, ctx(work, "s2")),
            tools.call("write_file", {"path": "new.txt", "content": "made\n"}, ctx(work, "s2")),
        ]
        return await settle(blocked + others, work / "pipe")

    *refused, read, listed, wrote = asyncio.run(go())
    assert all(outcome.is_error for outcome in refused)
    assert read == tools.ToolOutcome("     1\tfine", False)
    assert {"linked.txt", "ok.txt", "pipe"} <= set(listed.content.splitlines())
    assert wrote == tools.ToolOutcome("wrote 5 bytes to 'new.txt' (new file)", False)
    assert (work / "new.txt").read_text() == "made\n"


def test_write_and_edit_still_replace_regular_files_in_place(work):
    (work / "f.txt").write_text("one two\n")
    inode = (work / "f.txt").stat().st_ino
    wrote, edited = run_calls(
        work,
        [
            ("write_file", {"path": "f.txt", "content": "three four\n"}),
            ("edit_file", {"path": "f.txt", "old": "four", "new": "4"}),
        ],
    )
    assert wrote == tools.ToolOutcome(
        "wrote 11 bytes to 'f.txt' (replaced its previous content)", False
    )
    assert edited == tools.ToolOutcome("edited 'f.txt' at line 1", False)
    assert (work / "f.txt").read_text() == "three 4\n"
    assert (work / "f.txt").stat().st_ino == inode


def test_write_does_not_create_through_a_dangling_symlink_out(work):
    (work / "dangling").symlink_to(work.parent / "outside" / "planted.txt")
    [outcome] = run_calls(work, [("write_file", {"path": "dangling", "content": "x"})])
    assert outcome.is_error
    assert not (work.parent / "outside" / "planted.txt").exists()
