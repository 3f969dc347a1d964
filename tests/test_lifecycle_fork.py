"""POST /sessions/{id}/fork: a copy of the history up to a message, living on independently;
forking a running session copies only its completed steps (in-process app)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_client, make_settings, scripted_agent
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

TOOL_TURN = [
    {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {}}]},
    {"text": "Found it."},
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def new_session(http: Any, tmp_path: Path, script: list[Any], **options: Any) -> str:
    body = scripted_agent(
        script, name=f"a{time.monotonic_ns()}", tools=["list_files"], options=options
    )
    agent = (await http.post("/agents", json=body)).json()["id"]
    session = {"agent_id": agent, "work_dir": str(tmp_path), "title": "origin", "tags": ["t"]}
    return str((await http.post("/sessions", json=session)).json()["id"])


async def history(http: Any, sid: str) -> list[dict[str, Any]]:
    return list((await http.get(f"/sessions/{sid}/messages")).json()["data"])


def text_of(message: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in message["content"])


def test_fork_at_a_middle_message(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await new_session(http, tmp_path, [{"text": "ok"}])
            for word in ("one", "two", "three"):
                await http.post(f"/sessions/{sid}/message", json={"message": word})
            source = await history(http, sid)
            assert len(source) == 6
            middle = source[3]  # the answer to "two"
            forked = await http.post(
                f"/sessions/{sid}/fork",
                json={"at_message_id": middle["id"], "title": "branch", "name": "branch-1"},
            )
            assert forked.status_code == 201, forked.text
            fork = forked.json()
            assert fork["id"] != sid and fork["name"] == "branch-1" and fork["title"] == "branch"
            assert fork["parent_id"] == sid and fork["forked_from_message_id"] == middle["id"]
            assert fork["tags"] == ["t"] and fork["work_dir"] == str(tmp_path.resolve())
            assert fork["message_count"] == 4 and fork["status"] == "idle"
            copied = await history(http, fork["id"])
            assert [text_of(m) for m in copied] == ["one", "ok", "two", "ok"]
            assert [m["seq"] for m in copied] == [1, 2, 3, 4]
            assert {m["id"] for m in copied}.isdisjoint({m["id"] for m in source})
            assert all(m["session_id"] == fork["id"] for m in copied)

            # both live on independently
            await http.post(f"/sessions/{fork['id']}/message", json={"message": "fork only"})
            await http.post(f"/sessions/{sid}/message", json={"message": "origin only"})
            assert [text_of(m) for m in await history(http, fork["id"])][4:] == ["fork only", "ok"]
            assert [text_of(m) for m in await history(http, sid)][6:] == ["origin only", "ok"]
            assert (await http.get(f"/sessions/{fork['id']}")).json()["turn_count"] == 1
            assert (await http.delete(f"/sessions/{sid}")).status_code == 204
            assert len(await history(http, fork["id"])) == 6

    run(go())


def test_fork_defaults_to_the_whole_history(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await new_session(http, tmp_path, TOOL_TURN)
            await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            source = await history(http, sid)
            for body in ({}, None):
                forked = await http.post(f"/sessions/{sid}/fork", json=body)
                assert forked.status_code == 201, forked.text
                fork = forked.json()
                assert fork["title"] == "origin" and fork["name"] is None
                assert fork["forked_from_message_id"] == source[-1]["id"]
                copied = await history(http, fork["id"])
                assert [m["content"] for m in copied] == [m["content"] for m in source]
            empty = await new_session(http, tmp_path, [{"text": "ok"}])
            blank = (await http.post(f"/sessions/{empty}/fork", json={})).json()
            assert blank["message_count"] == 0 and blank["forked_from_message_id"] is None

    run(go())


def test_fork_cut_after_a_tool_call_still_runs(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await new_session(http, tmp_path, TOOL_TURN)
            await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            call = (await history(http, sid))[1]
            assert call["content"][-1]["type"] == "tool_use"
            fork = await http.post(f"/sessions/{sid}/fork", json={"at_message_id": call["id"]})
            fid = fork.json()["id"]
            sent = await http.post(f"/sessions/{fid}/message", json={"message": "go on"})
            assert sent.status_code == 200, sent.text
            assert sent.json()["status"] == "completed"

    run(go())


def test_fork_errors(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await new_session(http, tmp_path, [{"text": "ok"}])
            other = await new_session(http, tmp_path, [{"text": "ok"}])
            await http.post(f"/sessions/{other}/message", json={"message": "x"})
            foreign = (await history(http, other))[0]["id"]
            await http.post("/sessions", json={"name": "taken"})
            cases = [
                (f"/sessions/{sid}/fork", {"at_message_id": foreign}, 404, "at_message_id"),
                (f"/sessions/{sid}/fork", {"name": "taken"}, 409, "name"),
                (f"/sessions/{sid}/fork", {"name": "bad name"}, 400, "name"),
                (f"/sessions/{sid}/fork", {"bogus": 1}, 400, "bogus"),
                (f"/sessions/{sid}/fork", [], 400, None),
                ("/sessions/nope/fork", {}, 404, None),
            ]
            count = len((await http.get("/sessions")).json()["data"])
            for path, body, status, field in cases:
                response = await http.post(path, json=body)
                assert response.status_code == status, (body, response.text)
                assert response.json()["type"] == "error"
                assert response.json()["error"].get("field") == field
            assert len((await http.get("/sessions")).json()["data"]) == count

    run(go())


def test_forking_a_running_session_copies_completed_steps(tmp_path: Path) -> None:
    long = " ".join(f"w{i}" for i in range(250))  # 5 s of words: still running at the fork
    script = [TOOL_TURN[0], {"text": long}]

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await new_session(http, tmp_path, script, token_delay_ms=20)
            started = await http.post(f"/sessions/{sid}/runs", json={"message": "ls"})
            run_id = started.json()["run_id"]

            async def steps_done() -> bool:  # user, tool call, tool result
                return len(await history(http, sid)) >= 3

            await until(steps_done, "the tool step to be stored")
            fork = (await http.post(f"/sessions/{sid}/fork", json={})).json()
            assert (await http.get(f"/sessions/{sid}/runs/{run_id}")).json()["status"] == "running"
            copied = await history(http, fork["id"])
            assert [m["role"] for m in copied] == ["user", "assistant", "user"]
            assert copied[2]["content"][0]["type"] == "tool_result"

            async def ended() -> bool:
                run = (await http.get(f"/sessions/{sid}/runs/{run_id}")).json()
                return bool(run["status"] != "running")

            await until(ended, "the run to end")
            assert len(await history(http, sid)) == 4
            assert len(await history(http, fork["id"])) == 3

    run(go())
