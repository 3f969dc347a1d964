"""run_command in a real `sessiond serve`: the command cannot read the server's environment,
and nothing it started outlives a cancel, a timeout or a SIGKILL of the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_system, scripted_agent
from tests.live import ProcessServer
from tests.test_tools_command import marker, running
from tests.waiting import wait_until

SECRET = "sk-test-secret-0f9e"


@pytest.fixture(params=["sandboxed", "unsandboxed"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessServer]:
    """A server with --allow-run-command (and a secret in its environment), in bubblewrap or,
    with bwrap off its PATH, with --allow-unsandboxed-commands."""
    env = {"SESSIOND_TEST_SECRET_KEY": SECRET}
    extra = ["--allow-run-command"]
    if request.param == "sandboxed":
        require_system("bwrap", "bubblewrap")
    else:
        (tmp_path / "no-programs").mkdir()
        env["PATH"] = str(tmp_path / "no-programs")
        extra.append("--allow-unsandboxed-commands")
    live = ProcessServer(tmp_path / "sessiond.db", tmp_path, *extra, env=env).start()
    try:
        yield live
    finally:
        if live.proc is not None and live.proc.poll() is None:
            live.kill()


def session(server: ProcessServer, command: str, **input: Any) -> str:
    call = {"name": "run_command", "input": {"command": command, **input}}
    body = scripted_agent([{"tool_calls": [call]}, {"text": "ok"}], tools=["run_command"])
    agent = httpx.post(f"{server.url}/agents", json=body)
    assert agent.status_code == 201, agent.text
    work = server.workdir / "work"
    work.mkdir(exist_ok=True)
    created = httpx.post(
        f"{server.url}/sessions", json={"agent_id": agent.json()["id"], "work_dir": str(work)}
    )
    return str(created.json()["id"])


def sleeping(mark: str) -> bool:
    return any(_argv0(pid) == "sleep" for pid in running(mark))


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def test_the_command_sees_no_secret_of_the_server(server: ProcessServer) -> None:
    assert server.proc is not None
    assert SECRET in Path(f"/proc/{server.proc.pid}/environ").read_text()  # it is there
    sid = session(server, "tr '\\0' '\\n' < /proc/$PPID/environ; echo ---; env")
    answer = httpx.post(f"{server.url}/sessions/{sid}/message", json={"message": "go"}, timeout=60)
    assert answer.status_code == 200, answer.text
    history = httpx.get(f"{server.url}/sessions/{sid}/messages").json()["data"]
    [result] = history[2]["content"]
    assert not result["is_error"] and "---\n" in result["content"]
    assert SECRET not in result["content"] and "SESSIOND_TEST_SECRET_KEY" not in result["content"]


@pytest.mark.parametrize("ending", ["server killed", "cancel", "timeout"])
def test_nothing_the_command_started_outlives_its_run(server: ProcessServer, ending: str) -> None:
    mark = marker()
    timeout = 2 if ending == "timeout" else 300
    command = f"sleep 300 {mark} & echo started > started; wait"
    sid = session(server, command, timeout_s=timeout)
    started = httpx.post(f"{server.url}/sessions/{sid}/runs", json={"message": "go"})
    assert started.status_code == 202, started.text
    run = f"{server.url}/sessions/{sid}/runs/{started.json()['run_id']}"
    if ending != "timeout":
        wait_until(lambda: sleeping(mark), "the command's background sleep to start")
    if ending == "server killed":
        server.kill()
    elif ending == "cancel":
        assert httpx.post(f"{run}/cancel").status_code == 200
    wait_until(lambda: not running(mark), "every process of the command to end")
    if ending == "timeout":
        wait_until(lambda: httpx.get(run).json()["status"] == "completed", "the run to end")
        [call] = httpx.get(run).json()["tool_calls"]
        assert call["is_error"]
        assert (server.workdir / "work" / "started").exists()  # it had started its sleep
