"""run_command: output, exit code, environment, timeout and cancellation kill the whole group;
off unless enabled; confined by bubblewrap, or refused without it unless allowed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from server import tools
from server.tools.base import ToolContext, ToolSettings
from server.tools.run_command import Output
from tests.conftest import require_system
from tests.waiting import until, wait_until


@pytest.fixture(params=["sandboxed", "unsandboxed"], autouse=True)
def mode(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs in bubblewrap, and again as the plain process a server without
    bubblewrap runs when the operator allows it (bwrap is then not on the PATH)."""
    if request.param == "sandboxed":
        require_system("bwrap", "bubblewrap")
    else:
        monkeypatch.setenv("PATH", str(empty_folder(tmp_path)))
    return str(request.param)


def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "no-programs"
    folder.mkdir(exist_ok=True)
    return folder


def context(work_dir: Any, **settings: Any) -> ToolContext:
    enabled = {"allow_run_command": True, "allow_unsandboxed_commands": True}
    return ToolContext(str(work_dir), "s1", "r1", ToolSettings(**(enabled | settings)))


def run(command: str, work_dir: Any, **input: Any) -> tools.ToolOutcome:
    call = tools.call("run_command", {"command": command, **input}, context(work_dir))
    return asyncio.run(asyncio.wait_for(call, HANG_S))


HANG_S = 60.0  # a call that takes this long hangs: far beyond what any command here needs
LONG = 3600  # seconds a background `sleep` would last: a call that waited for it would hang


def marker() -> str:
    """A unique argument for `sleep` (which adds up its arguments): its process can be
    found by its command line, whatever pid namespace it runs in."""
    return f"0.{time.time_ns()}{os.getpid()}"


def running(mark: str) -> list[int]:
    """Processes (not zombies) whose command line holds `mark`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def gone(mark: str) -> bool:
    return bool(wait_until(lambda: not running(mark), f"the processes of {mark} to end"))


def test_output_and_exit_code(tmp_path):
    outcome = run("echo out; echo err >&2; exit 3", tmp_path)
    assert outcome == tools.ToolOutcome("out\nerr\nexit code: 3", False)


def test_runs_in_work_dir_with_no_output(tmp_path):
    assert run("pwd", tmp_path).content == f"{os.path.realpath(tmp_path)}\nexit code: 0"
    assert run("true", tmp_path).content == "(no output)\nexit code: 0"


def test_killed_by_a_signal(tmp_path):
    outcome = run("kill -9 $$", tmp_path).content
    assert outcome == "(no output)\nexit code: 137 (128 + SIGKILL)"


def test_environment_is_minimal_and_has_no_server_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIOND_TEST_SECRET", "hunter2")
    outcome = run("env", tmp_path)
    assert "SESSIOND_TEST_SECRET" not in outcome.content
    assert "hunter2" not in outcome.content
    env = dict(line.split("=", 1) for line in outcome.content.splitlines()[:-1])
    assert env.pop("PWD", None) in (None, os.path.realpath(tmp_path))
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.path.realpath(tmp_path),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


def test_output_is_capped_keeping_start_and_end(tmp_path):
    ctx = context(tmp_path, output_max_bytes=1000)
    outcome = asyncio.run(tools.call("run_command", {"command": "seq 1 5000"}, ctx))
    assert outcome.content.startswith("1\n2\n3\n")
    assert outcome.content.endswith("4999\n5000\nexit code: 0")
    assert "bytes of output omitted from the middle]" in outcome.content
    assert len(outcome.content) < 1200


def test_output_buffer_keeps_head_and_tail():
    output = Output(10)
    for chunk in [b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"]:
        output.add(chunk)
    assert output.text() == "abcde\n[truncated: 16 bytes of output omitted from the middle]\nvwxyz"
    small = Output(10)
    small.add(b"hello\n")
    assert small.text() == "hello"


def test_timeout_kills_the_process_group(tmp_path):
    mark = marker()
    outcome = run(f"sleep {LONG} {mark} & wait", tmp_path, timeout_s=1)
    assert outcome == tools.ToolOutcome("timed out after 1 s; the command was killed", True)
    assert gone(mark)


@pytest.mark.parametrize("redirect", ["", ">/dev/null 2>&1"])
def test_background_jobs_do_not_outlive_the_command(tmp_path, redirect):
    mark = marker()
    outcome = run(f"sleep {LONG} {mark} {redirect} & echo started", tmp_path)
    assert outcome == tools.ToolOutcome("started\nexit code: 0", False)
    assert gone(mark)


def test_cancellation_kills_the_process_group_and_propagates(tmp_path):
    mark = marker()

    async def scenario() -> None:
        ctx = context(tmp_path)
        task = asyncio.create_task(
            tools.call("run_command", {"command": f"sleep {LONG} {mark} & wait"}, ctx)
        )
        started = lambda: any("sleep" in cmdline(pid) for pid in running(mark))  # noqa: E731
        await until(started, "the command's sleep to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), HANG_S))
    assert gone(mark)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def test_off_unless_the_operator_enables_it(tmp_path):
    ctx = ToolContext(str(tmp_path), "s1", "r1", ToolSettings(allow_unsandboxed_commands=True))
    outcome = asyncio.run(tools.call("run_command", {"command": "touch made"}, ctx))
    assert outcome.is_error and "--allow-run-command" in outcome.content
    assert "operator" in outcome.content
    assert not (tmp_path / "made").exists()
