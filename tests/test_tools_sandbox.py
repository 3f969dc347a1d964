"""run_command's sandbox (bubblewrap): what a command can see and reach; without bubblewrap,
a refusal unless the operator allows running commands unconfined."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from server import tools
from server.tools.base import ToolContext, ToolSettings
from tests.conftest import require_system


@pytest.fixture
def bwrap() -> str:
    return require_system("bwrap", "bubblewrap")


def context(work_dir: Any, **settings: Any) -> ToolContext:
    return ToolContext(str(work_dir), "s1", "r1", ToolSettings(allow_run_command=True, **settings))


def run(command: str, work_dir: Any) -> tools.ToolOutcome:
    return asyncio.run(tools.call("run_command", {"command": command}, context(work_dir)))


def empty_folder(tmp_path: Any) -> Any:
    folder = tmp_path / "no-programs"
    folder.mkdir(exist_ok=True)
    return folder


def test_the_sandbox_hides_what_lies_outside_the_work_dir(tmp_path, bwrap):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside.txt").write_text("next door")
    outcome = run("cat ../outside.txt; ls /root /home; cat /etc/shadow", work)
    assert "next door" not in outcome.content
    assert "../outside.txt: No such file" in outcome.content
    assert outcome.content.endswith("exit code: 1")
    assert run(f"cat {tmp_path}/outside.txt", work).content.endswith("exit code: 1")


def test_the_sandbox_lets_the_work_dir_be_written_and_the_system_not(tmp_path, bwrap):
    outcome = run("echo hi > made && cat made; touch /usr/x", tmp_path)
    assert outcome.content.startswith("hi\ntouch: cannot touch '/usr/x': Read-only file system")
    assert (tmp_path / "made").read_text() == "hi\n"


def test_the_sandbox_has_no_network(tmp_path, bwrap):
    bash = require_system("bash", "bash")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        outcome = run(
            f"{bash} -c 'echo hello > /dev/tcp/127.0.0.1/{port}' && echo connected", tmp_path
        )
        listener.setblocking(False)  # a connection made would wait in the backlog by now
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "connected" not in outcome.content and "Connection refused" in outcome.content


def test_the_sandbox_shows_no_other_process(tmp_path, bwrap):
    outcome = run("ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '", tmp_path)
    count, first = outcome.content.splitlines()[:2]
    assert int(count) <= 4  # bwrap, the shell, ls and grep (each pipeline's own)
    assert "bwrap" in first.split()[0]  # pid 1 is the sandbox's own bwrap, not the server


def test_the_sandbox_hides_the_servers_database_in_the_work_dir(tmp_path, bwrap):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sessiond.db").write_text("the database")
    (tmp_path / "top.db").write_text("another database")
    for db, shown in (
        ("data/sessiond.db", "ls data; cat data/sessiond.db"),
        ("top.db", "cat top.db"),
    ):
        ctx = context(tmp_path, hidden_paths=(str(tmp_path / db),))
        outcome = asyncio.run(tools.call("run_command", {"command": shown}, ctx))
        assert "database" not in outcome.content, outcome.content
    assert (tmp_path / "top.db").read_text() == "another database"


def test_without_bubblewrap_it_refuses_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(empty_folder(tmp_path)))
    ctx = ToolContext(str(tmp_path), "s1", "r1", ToolSettings(allow_run_command=True))
    outcome = asyncio.run(tools.call("run_command", {"command": "touch made"}, ctx))
    assert outcome.is_error and "bubblewrap" in outcome.content
    assert "--allow-unsandboxed-commands" in outcome.content
    assert not (tmp_path / "made").exists()


def test_a_bwrap_that_cannot_set_up_the_sandbox_is_a_clear_error(tmp_path, monkeypatch):
    fake = empty_folder(tmp_path) / "bwrap"  # as on a host without user namespaces
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    outcome = run("touch made", tmp_path)
    assert outcome.is_error
    assert "sandbox (bubblewrap) could not start" in outcome.content
    assert "No permissions to create new namespace" in outcome.content
    assert not (tmp_path / "made").exists()
