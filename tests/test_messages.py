"""The message call end to end on a real uvicorn server: blocking and streaming agree, the
stream's order is exact, history is stored and continued, restarts lose nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import scripted_agent
from tests.live import ThreadServer
from tests.sse import collect, events, typed

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

TOOL_THEN_ANSWER = [
    {"text": "Let me look.", "tool_calls": [{"name": "list_files", "input": {"path": "."}}]},
    {"text": "There is one file: notes.txt"},
]


def setup_session(url: str, tmp_path: Path, script: list[dict[str, Any]], **agent: Any) -> str:
    (tmp_path / "notes.txt").write_text("hello\n")
    body = scripted_agent(script, tools=["list_files", "read_file"], **agent)
    agent_id = httpx.post(f"{url}/agents", json=body).json()["id"]
    session = {"agent_id": agent_id, "work_dir": str(tmp_path)}
    return str(httpx.post(f"{url}/sessions", json=session).json()["id"])


def strip_ids(messages: list[dict[str, Any]]) -> list[Any]:
    out = []
    for message in messages:
        blocks = []
        for block in message["content"]:
            block = {k: v for k, v in block.items() if k not in ("id", "tool_use_id")}
            blocks.append(block)
        out.append((message["role"], blocks))
    return out


async def stream_turn(url: str, sid: str, text: str) -> list[Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"message": text}
        async with http.stream("POST", f"{url}/sessions/{sid}/message/stream", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            return await collect(r)


def test_tool_turn_blocking_and_streaming_store_the_same_messages(
    live: ThreadServer, tmp_path: Path
) -> None:
    sid_a = setup_session(live.url, tmp_path, TOOL_THEN_ANSWER, name="a")
    blocking = httpx.post(f"{live.url}/sessions/{sid_a}/message", json={"message": "ls"})
    assert blocking.status_code == 200, blocking.text
    result = blocking.json()
    assert result["response"] == "There is one file: notes.txt"
    assert result["steps"] == 2 and result["stop_reason"] == "end_turn"
    [call] = result["tool_calls"]
    assert call["name"] == "list_files" and call["input"] == {"path": "."}
    assert "notes.txt" in call["output"] and call["is_error"] is False
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0

    sid_b = setup_session(live.url, tmp_path, TOOL_THEN_ANSWER, name="b")
    streamed = asyncio.run(stream_turn(live.url, sid_b, "ls"))

    history_a = httpx.get(f"{live.url}/sessions/{sid_a}/messages").json()["data"]
    history_b = httpx.get(f"{live.url}/sessions/{sid_b}/messages").json()["data"]
    assert strip_ids(history_a) == strip_ids(history_b)
    assert [m["role"] for m in history_a] == ["user", "assistant", "user", "assistant"]
    assert [m["seq"] for m in history_a] == [1, 2, 3, 4]
    assert [b["type"] for b in history_a[1]["content"]] == ["text", "tool_use"]
    assert history_a[2]["content"][0]["type"] == "tool_result"
    assert history_a[2]["content"][0]["tool_use_id"] == history_a[1]["content"][1]["id"]

    assert streamed[0].retry is not None and streamed[0].data == ""
    kinds = [e.event for e in typed(streamed)]
    step1 = ["message_start", "content_block_start"] + ["text_delta"] * 3
    step1 += ["content_block_stop", "content_block_start"] + ["input_json_delta"] * 4
    step1 += ["content_block_stop", "message_delta", "message_stop", "tool_result"]
    step2 = ["message_start", "content_block_start"] + ["text_delta"] * 5
    step2 += ["content_block_stop", "message_delta", "message_stop", "done"]
    assert kinds == step1 + step2
    body = typed(streamed)
    assert [int(e.id) for e in body if e.id] == list(range(1, len(body) + 1))
    for event in body:
        assert event.json["type"] == event.event
    assert body[2].json == {"type": "text_delta", "text": "Let ", "index": 0}
    done = body[-1].json
    assert done["steps"] == 2 and done["stop_reason"] == "end_turn"
    assert done["status"] == "completed" and done["usage"]["output_tokens"] > 0
    partial = "".join(e.json["partial_json"] for e in body if e.event == "input_json_delta")
    assert partial == '{"path":"."}'


def test_second_message_continues_the_session(live: ThreadServer, tmp_path: Path) -> None:
    sid = setup_session(live.url, tmp_path, [{"text": "ok"}])
    first = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "one"}).json()
    second = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "two"}).json()
    # the scripted provider counts input from the history it is sent: it saw turn one
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    assert [m["content"][0]["text"] for m in history] == ["one", "ok", "two", "ok"]
    session = httpx.get(f"{live.url}/sessions/{sid}").json()
    assert session["message_count"] == 4 and session["turn_count"] == 2
    total = first["usage"]["input_tokens"] + second["usage"]["input_tokens"]
    assert session["usage"]["input_tokens"] == total


def test_first_text_delta_arrives_before_the_run_ends(live: ThreadServer, tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    sid = setup_session(live.url, tmp_path, [{"text": words}], options={"token_delay_ms": 25})

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            url = f"{live.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", url, json={"message": "go"}) as response:
                first = None
                async for event in events(response):
                    if event.event == "text_delta" and first is None:
                        first = event  # the run goes on after it: it came before the end
                        runs = (await http.get(f"{live.url}/sessions/{sid}/runs")).json()
                        assert runs["data"][0]["status"] == "running"
                    if event.event == "done":
                        break
        assert event.event == "done"
        assert first is not None

    asyncio.run(go())


def test_restart_keeps_sessions_and_history(live: ThreadServer, tmp_path: Path) -> None:
    sid = setup_session(live.url, tmp_path, TOOL_THEN_ANSWER)
    httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "ls"})
    before = httpx.get(f"{live.url}/sessions/{sid}/messages").json()
    session = httpx.get(f"{live.url}/sessions/{sid}").json()
    live.restart()
    assert httpx.get(f"{live.url}/sessions/{sid}/messages").json() == before
    assert httpx.get(f"{live.url}/sessions/{sid}").json() == session
    again = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "more"})
    assert again.status_code == 200
    assert httpx.get(f"{live.url}/sessions/{sid}").json()["message_count"] == 8


def test_busy_session_is_409_with_run_id(live: ThreadServer, tmp_path: Path) -> None:
    sid = setup_session(
        live.url, tmp_path, [{"text": "a b c d e f g h"}], options={"token_delay_ms": 100}
    )
    started = httpx.post(f"{live.url}/sessions/{sid}/runs", json={"message": "slow"})
    assert started.status_code == 202
    busy = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "now"})
    assert busy.status_code == 409
    error = busy.json()["error"]
    assert error["type"] == "session_busy" and error["run_id"] == started.json()["run_id"]
    assert busy.headers["retry-after"]


def test_on_done_the_whole_turn_is_already_stored(live: ThreadServer, tmp_path: Path) -> None:
    sid = setup_session(live.url, tmp_path, [{"text": "stored before done"}])

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            url = f"{live.url}/sessions/{sid}/message/stream"
            for i in range(15):
                async with http.stream("POST", url, json={"message": f"m{i}"}) as response:
                    async for event in events(response):
                        if event.event == "done":
                            break
                got = await http.get(f"{live.url}/sessions/{sid}/messages?after={2 * i}")
                tail = got.json()["data"]
                assert [m["role"] for m in tail] == ["user", "assistant"], tail
                assert tail[1]["content"][0]["text"] == "stored before done"

    asyncio.run(go())


def test_a_stream_names_its_run_before_the_end_so_it_can_be_cancelled(
    live: ThreadServer, tmp_path: Path
) -> None:
    """The run id comes in the response header and in the first event, not only at `done`:
    with it the client cancels the run while it still streams."""
    slow = [{"text": " ".join(f"w{i}" for i in range(400))}]
    sid = setup_session(live.url, tmp_path, slow, options={"token_delay_ms": 20})

    async def go() -> tuple[str, dict[str, Any], list[Any]]:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", path, json={"message": "go"}) as response:
                assert response.status_code == 200
                header = response.headers["sessiond-run-id"]
                seen = []
                async for event in events(response):
                    seen.append(event)
                    if event.event == "message_start":
                        start = event.json
                        assert start["run_id"] == header
                        cancelled = await http.post(
                            f"{live.url}/sessions/{sid}/runs/{header}/cancel"
                        )
                        assert cancelled.status_code == 200, cancelled.text
                    if event.event == "done":
                        return header, event.json, seen
        raise AssertionError("the stream ended without done")

    header, done, seen = asyncio.run(go())
    assert done["run_id"] == header and done["status"] == "cancelled"
    assert sum(e.event == "text_delta" for e in seen) < 400  # stopped before the end

    quick = setup_session(live.url, tmp_path, [{"text": "ok"}], name="quick")
    blocking = httpx.post(f"{live.url}/sessions/{quick}/message", json={"message": "again"})
    assert blocking.headers["sessiond-run-id"] == blocking.json()["run_id"]
    started = httpx.post(f"{live.url}/sessions/{quick}/runs", json={"message": "bg"})
    assert started.headers["sessiond-run-id"] == started.json()["run_id"]
