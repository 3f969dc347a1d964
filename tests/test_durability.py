"""Runs outlive their connection: reconnect with Last-Event-ID, watchers, cancel, if_busy,
idempotency (in-process uvicorn); SIGKILL and SIGTERM (a child `sessiond serve`)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import scripted_agent
from tests.live import ProcessServer, ThreadServer
from tests.sse import Event, collect, events, typed
from tests.waiting import wait_until

TOOL_SCRIPT = [
    {"text": "Looking around now.", "tool_calls": [{"name": "list_files", "input": {}}]},
    {"text": " ".join(f"word{i}" for i in range(30))},
]


def new_session(url: str, workdir: Path, script: list[Any], delay_ms: float = 0, **kw: Any) -> str:
    agent = scripted_agent(
        script,
        tools=["list_files"],
        options={"token_delay_ms": delay_ms},
        name=f"agent-{time.monotonic_ns()}",
    )
    agent_id = httpx.post(f"{url}/agents", json=agent).json()["id"]
    body = {"agent_id": agent_id, "work_dir": str(workdir), **kw}
    return str(httpx.post(f"{url}/sessions", json=body).json()["id"])


def strip(event: Event) -> tuple[str, Any]:
    """An event without the ids that differ between two runs of the same script."""
    data = event.json
    for key in ("run_id",):
        data.pop(key, None)
    if event.event == "message_start":
        data["message"].pop("id")
        data["message"].pop("usage")
    if event.event == "content_block_start" and data["content_block"]["type"] == "tool_use":
        data["content_block"].pop("id")
    if event.event == "tool_result":
        data.pop("tool_use_id")
    if event.event in ("message_delta", "done"):
        data.pop("usage")  # input size depends on the history's ids
    return event.event, data


async def read_run(
    url: str, sid: str, run_id: str, last_event_id: str | None = None, stop_after: int | None = None
) -> list[Event]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with httpx.AsyncClient(timeout=30) as http:
        path = f"{url}/sessions/{sid}/runs/{run_id}/events"
        async with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            got: list[Event] = []
            async for event in events(response):
                got.append(event)
                if event.event == "done" or (stop_after and len(typed(got)) >= stop_after):
                    break
            return typed(got)


def test_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(
    live: ThreadServer, tmp_path: Path
) -> None:
    url = live.url
    sid = new_session(url, tmp_path, TOOL_SCRIPT, delay_ms=5)
    reference_sid = new_session(url, tmp_path, TOOL_SCRIPT)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            body = {"message": "go"}
            path = f"{url}/sessions/{sid}/message/stream"
            first: list[Event] = []
            async with http.stream("POST", path, json=body) as response:
                async for event in events(response):
                    first.append(event)
                    if len(typed(first)) == 12:
                        break  # the client goes away mid-stream
            first = typed(first)
            run_id = (await http.get(f"{url}/sessions/{sid}/runs")).json()["data"][0]["id"]
            second = await read_run(url, sid, run_id, last_event_id=first[-1].id)
            whole = await read_run(url, sid, run_id)
            reference_path = f"{url}/sessions/{reference_sid}/message/stream"
            async with http.stream("POST", reference_path, json=body) as response:
                reference = typed(await collect(response))
        joined = first + second
        assert [(e.id, e.event, e.data) for e in joined] == [(e.id, e.event, e.data) for e in whole]
        assert [strip(e) for e in joined] == [strip(e) for e in reference]
        assert joined[-1].event == "done" and joined[-1].json["status"] == "completed"

    asyncio.run(go())


def test_disconnected_run_goes_on_and_is_persisted(live: ThreadServer, tmp_path: Path) -> None:
    sid = new_session(live.url, tmp_path, TOOL_SCRIPT, delay_ms=5)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", path, json={"message": "go"}) as response:
                async for event in events(response):
                    if event.event == "text_delta":
                        break

    asyncio.run(go())
    run = wait_run(live.url, sid, lambda r: r["status"] != "running")
    assert run["status"] == "completed" and run["steps"] == 2
    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]


def test_cancel_on_disconnect_opt_in(live: ThreadServer, tmp_path: Path) -> None:
    sid = new_session(live.url, tmp_path, [{"text": "a " * 200}], delay_ms=10)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/message/stream"
            body = {"message": "go", "cancel_on_disconnect": True}
            async with http.stream("POST", path, json=body) as response:
                async for event in events(response):
                    if event.event == "text_delta":
                        break

    asyncio.run(go())
    run = wait_run(live.url, sid, lambda r: r["status"] != "running")
    assert run["status"] == "cancelled"


def wait_run(url: str, sid: str, ready: Any) -> dict[str, Any]:
    def latest() -> dict[str, Any] | None:
        runs = httpx.get(f"{url}/sessions/{sid}/runs").json()["data"]
        return dict(runs[0]) if runs and ready(runs[0]) else None

    found: dict[str, Any] = wait_until(latest, f"the run of {sid} to get ready")
    return found


def test_two_watchers_see_the_whole_run(live: ThreadServer, tmp_path: Path) -> None:
    sid = new_session(live.url, tmp_path, TOOL_SCRIPT, delay_ms=2)

    async def watch(ready: asyncio.Event) -> list[Event]:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/events"
            async with http.stream("GET", path) as response:
                got = []
                async for event in events(response):
                    if event.retry is not None:
                        ready.set()
                        continue
                    got.append(event)
                    if event.event == "done":
                        return got
        raise AssertionError("stream ended early")

    async def go() -> None:
        ready = [asyncio.Event(), asyncio.Event()]
        watchers = [asyncio.create_task(watch(r)) for r in ready]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        async with httpx.AsyncClient(timeout=30) as http:
            started = await http.post(f"{live.url}/sessions/{sid}/runs", json={"message": "go"})
            assert started.status_code == 202
            run_id = started.json()["run_id"]
            seen = await asyncio.wait_for(asyncio.gather(*watchers), 20)
        whole = await read_run(live.url, sid, run_id)
        for got in seen:
            assert [e.id for e in got] == [f"{run_id}:{e.id}" for e in whole]
            assert all(e.json["run_id"] == run_id for e in got)
            assert [e.json["type"] for e in got] == [e.event for e in whole]

    asyncio.run(go())


def test_cancel_stops_promptly_and_keeps_completed_steps(
    live: ThreadServer, tmp_path: Path
) -> None:
    script = [TOOL_SCRIPT[0], {"text": "slow " * 500}]
    sid = new_session(live.url, tmp_path, script, delay_ms=20)

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{live.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", path, json={"message": "go"}) as response:
                got: list[Event] = []
                async for event in events(response):
                    got.append(event)
                    if event.event == "text_delta" and any(e.event == "tool_result" for e in got):
                        run_id = (await http.get(f"{live.url}/sessions/{sid}/runs")).json()
                        rid = run_id["data"][0]["id"]
                        cancel = await asyncio.wait_for(
                            http.post(f"{live.url}/sessions/{sid}/runs/{rid}/cancel"), 30
                        )
                    if event.event == "done":
                        break
            assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
            # promptly: the run stopped well short of its 500 words (10 s of them)
            assert sum(e.event == "text_delta" for e in got) < 400
            tail = typed(got)[-2:]
            assert tail[0].event == "error" and tail[0].json["error"]["type"] == "cancelled"
            assert tail[1].json["status"] == "cancelled"
            run = cancel.json()
            assert run["usage"]["input_tokens"] > 0 and run["usage"]["output_tokens"] > 5
            history = (await http.get(f"{live.url}/sessions/{sid}/messages")).json()["data"]
            assert [m["role"] for m in history] == ["user", "assistant", "user"]
            again = await http.post(f"{live.url}/sessions/{sid}/runs/{rid}/cancel")
            assert again.json() == run
            session = (await http.get(f"{live.url}/sessions/{sid}")).json()
            assert session["status"] == "idle" and session["usage"] == run["usage"]

    asyncio.run(go())


def test_if_busy_queue_and_interrupt(live: ThreadServer, tmp_path: Path) -> None:
    # Each run streams for about two seconds: long enough that the first is still running
    # when the test reads the queued one, even on a loaded machine.
    reply = " ".join(f"w{i}" for i in range(40))
    sid = new_session(live.url, tmp_path, [{"text": reply}], delay_ms=50)
    url = f"{live.url}/sessions/{sid}"
    first = httpx.post(f"{url}/runs", json={"message": "first"}).json()
    queued = httpx.post(f"{url}/runs", json={"message": "second", "if_busy": "queue"}).json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    shown = httpx.get(f"{url}/runs/{queued['run_id']}").json()
    assert shown["status"] == "queued" and shown["queue_position"] == 1
    result = httpx.post(
        f"{url}/message", json={"message": "third", "if_busy": "queue"}, timeout=30
    ).json()
    assert result["status"] == "completed"
    runs = {r["id"]: r for r in httpx.get(f"{url}/runs").json()["data"]}
    assert runs[first["run_id"]]["status"] == "completed"
    assert runs[queued["run_id"]]["status"] == "completed"
    texts = [m["content"][0]["text"] for m in httpx.get(f"{url}/messages").json()["data"]]
    assert texts[0::2] == ["first", "second", "third"]

    slow = httpx.post(f"{url}/runs", json={"message": "slow"}).json()
    wait_run(live.url, sid, lambda r: r["id"] == slow["run_id"] and r["steps"] == 0)
    urgent = httpx.post(
        f"{url}/message", json={"message": "urgent", "if_busy": "interrupt"}, timeout=30
    )
    assert urgent.status_code == 200 and urgent.json()["status"] == "completed"
    assert httpx.get(f"{url}/runs/{slow['run_id']}").json()["status"] == "interrupted"
    texts = [m["content"][0]["text"] for m in httpx.get(f"{url}/messages").json()["data"]]
    assert texts[-3:] == ["slow", "urgent", reply]


def test_idempotency_key_returns_the_first_run(live: ThreadServer, tmp_path: Path) -> None:
    sid = new_session(live.url, tmp_path, [{"text": "once"}])
    headers = {"Idempotency-Key": "k-123"}
    url = f"{live.url}/sessions/{sid}/message"
    first = httpx.post(url, json={"message": "hi"}, headers=headers).json()
    second = httpx.post(url, json={"message": "hi"}, headers=headers).json()
    assert first == second
    started = httpx.post(f"{live.url}/sessions/{sid}/runs", json={"message": "hi"}, headers=headers)
    assert started.json()["run_id"] == first["run_id"]
    assert httpx.get(f"{live.url}/sessions/{sid}").json()["turn_count"] == 1


def test_idempotency_key_with_another_body_is_422_on_every_route(
    live: ThreadServer, tmp_path: Path
) -> None:
    sid = new_session(live.url, tmp_path, [{"text": "once"}])
    headers = {"Idempotency-Key": "k-body"}
    base = f"{live.url}/sessions/{sid}"
    first = httpx.post(f"{base}/message", json={"message": "hi"}, headers=headers).json()
    for path, body in [
        ("/message", {"message": "something else"}),
        ("/message/stream", {"message": "something else"}),
        ("/runs", {"message": "something else"}),
        ("/message", {"message": "hi", "if_busy": "queue"}),
    ]:
        refused = httpx.post(f"{base}{path}", json=body, headers=headers)
        assert refused.status_code == 422, (path, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "unprocessable" and "k-body" in error["message"]
    again = httpx.post(
        f"{base}/message", json={"message": [{"type": "text", "text": "hi"}]}, headers=headers
    )
    assert again.json()["run_id"] == first["run_id"]
    assert httpx.get(base).json()["turn_count"] == 1
    texts = [m["content"][0]["text"] for m in httpx.get(f"{base}/messages").json()["data"]]
    assert texts == ["hi", "once"]


# -- a real process, killed ---------------------------------------------------------------

# first step streaming; second step just started (the first is stored by then); deep in it
KILL_POINTS = ["first_step", "second_step", "late_text"]


def check_database(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = conn.execute(
            "SELECT s.id, s.message_count, s.last_seq, (SELECT count(*) FROM messages m "
            "WHERE m.session_id = s.id), s.input_tokens, (SELECT sum(input_tokens) FROM runs r "
            "WHERE r.session_id = s.id) FROM sessions s"
        ).fetchall()
        for _, count, last_seq, actual, tokens, run_tokens in rows:
            assert count == last_seq == actual
            assert tokens == (run_tokens or 0)
    finally:
        conn.close()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_mid_run_leaves_a_consistent_database(tmp_path: Path, point: str) -> None:
    db = tmp_path / "kill.db"
    server = ProcessServer(db, tmp_path).start()
    try:
        sid = new_session(server.url, tmp_path, TOOL_SCRIPT, delay_ms=20)

        seen: list[int] = []  # the ids the client received before the kill

        async def go() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                path = f"{server.url}/sessions/{sid}/message/stream"
                async with http.stream("POST", path, json={"message": "go"}) as response:
                    starts = late = 0
                    async for event in events(response):
                        if event.id:
                            seen.append(int(event.id))
                        starts += event.event == "message_start"
                        late += starts == 2 and event.event == "text_delta"
                        if (
                            (point == "first_step" and starts == 1)
                            or (point == "second_step" and starts == 2)
                            or (point == "late_text" and late == 10)
                        ):
                            server.kill()
                            return

        with pytest.raises(httpx.HTTPError):
            asyncio.run(go())
            raise httpx.ReadError("killed")
        check_database(db)
        server = ProcessServer(db, tmp_path).start()
        run = httpx.get(f"{server.url}/sessions/{sid}/runs").json()["data"][0]
        assert run["status"] == "interrupted"
        assert run["error"]["type"] == "interrupted"
        history = httpx.get(f"{server.url}/sessions/{sid}/messages").json()["data"]
        roles = [m["role"] for m in history]
        expected = ["user"] if point == "first_step" else ["user", "assistant", "user"]
        assert roles == expected
        replay = asyncio.run(read_run(server.url, sid, run["id"]))
        assert [e.event for e in replay[-2:]] == ["error", "done"]
        stored = [int(e.id) for e in replay[:-2]]
        assert stored == list(range(1, len(stored) + 1))
        # Every id the client received names the event it named then, and the run's end
        # comes after all of them: a resume from the last one ends with `error` and `done`.
        closing = [int(e.id) for e in replay[-2:]]
        assert closing[0] > max(seen) and closing[1] == closing[0] + 1
        resumed = asyncio.run(read_run(server.url, sid, run["id"], str(max(seen))))
        assert [(e.event, e.id) for e in resumed] == [(e.event, e.id) for e in replay[-2:]]
        session = httpx.get(f"{server.url}/sessions/{sid}").json()
        assert session["status"] == "idle"
        if point != "first_step":
            assert run["usage"]["output_tokens"] > 0
        again = httpx.post(
            f"{server.url}/sessions/{sid}/message", json={"message": "again"}, timeout=30
        )
        assert again.status_code == 200 and again.json()["status"] == "completed"
        check_database(db)
    finally:
        server.stop()


SLOW_TOOL_SCRIPT = [
    {
        "text": "Two things at once.",
        "tool_calls": [
            {"name": "list_files", "input": {}},
            {"name": "run_command", "input": {"command": "sleep 2; echo slept"}},
        ],
    },
    {"text": "Both are done."},
]
COMMAND_FLAGS = ("--allow-run-command",)  # sandboxed by bubblewrap where it is installed


def test_a_tool_result_the_client_saw_survives_sigkill(tmp_path: Path) -> None:
    """The quick tool's result lands while the slow one still runs; a kill as soon as the
    client sees a result must not lose it: the step is stored before its results are shown."""
    db = tmp_path / "kill.db"
    server = ProcessServer(db, tmp_path, *COMMAND_FLAGS).start()
    agent = scripted_agent(SLOW_TOOL_SCRIPT, tools=["list_files", "run_command"])
    agent_id = httpx.post(f"{server.url}/agents", json=agent).json()["id"]
    body = {"agent_id": agent_id, "work_dir": str(tmp_path)}
    sid = httpx.post(f"{server.url}/sessions", json=body).json()["id"]
    shown: list[dict[str, Any]] = []

    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{server.url}/sessions/{sid}/message/stream"
            async with http.stream("POST", path, json={"message": "go"}) as response:
                async for event in events(response):
                    if event.event == "tool_result":
                        shown.append(event.json)
                        server.kill()
                        return

    try:
        asyncio.run(go())
        assert shown, "the stream ended before any tool result"
        server = ProcessServer(db, tmp_path, *COMMAND_FLAGS).start()
        history = httpx.get(f"{server.url}/sessions/{sid}/messages").json()["data"]
        results = {
            block["tool_use_id"]: block
            for message in history
            for block in message["content"]
            if block["type"] == "tool_result"
        }
        for result in shown:
            assert results[result["tool_use_id"]]["content"] == result["content"]
        check_database(db)
    finally:
        server.stop()


def test_sigterm_during_a_stream_exits_within_the_grace_period(tmp_path: Path) -> None:
    db = tmp_path / "term.db"
    server = ProcessServer(db, tmp_path, "--shutdown-grace", "2").start()
    sid = new_session(server.url, tmp_path, [{"text": "tick " * 2000}], delay_ms=20)

    async def go() -> tuple[float, list[Event]]:
        async with httpx.AsyncClient(timeout=30) as http:
            path = f"{server.url}/sessions/{sid}/message/stream"
            got: list[Event] = []
            waited = None
            async with http.stream("POST", path, json={"message": "go"}) as response:
                async for event in events(response):
                    got.append(event)
                    if event.event == "text_delta" and waited is None:
                        loop = asyncio.get_running_loop()
                        waited = loop.run_in_executor(None, server.terminate)
            assert waited is not None
            return await waited, got

    elapsed, got = asyncio.run(go())
    assert elapsed < 2 + 1
    assert got[-1].event == "done" and got[-1].json["status"] == "interrupted"
    server = ProcessServer(db, tmp_path).start()
    try:
        run = httpx.get(f"{server.url}/sessions/{sid}/runs").json()["data"][0]
        assert run["status"] == "interrupted"
        check_database(db)
    finally:
        server.stop()


def test_quiet_streams_get_pings_without_an_id(live: ThreadServer, tmp_path: Path) -> None:
    sid = new_session(live.url, tmp_path, [{"text": "slow reply"}], delay_ms=1600)

    async def first_ping(method: str, path: str, body: Any = None) -> Event:
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream(method, f"{live.url}{path}", json=body) as response,
        ):
            async for event in events(response):
                if event.event == "ping":
                    return event
        raise AssertionError("no ping")

    async def go() -> None:
        channel = await first_ping("GET", f"/sessions/{sid}/events")
        run = await first_ping("POST", f"/sessions/{sid}/message/stream", {"message": "hi"})
        for ping in (channel, run):
            assert ping.id is None and ping.json == {"type": "ping"}  # no `id:` line

    asyncio.run(go())


def test_disconnect_right_after_done_with_cancel_on_disconnect(
    live: ThreadServer, tmp_path: Path
) -> None:
    """A cancel that lands while a run is finishing waits for it instead of breaking it."""
    sid = new_session(live.url, tmp_path, [{"text": "short reply"}])

    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"{live.url}/sessions/{sid}/message/stream"
            body = {"message": "go", "cancel_on_disconnect": True}
            for _ in range(10):
                async with http.stream("POST", url, json=body) as response:
                    async for event in events(response):
                        if event.event == "done":
                            break
                # the next message, sent the moment `done` arrives, finds the session free
                quick = await http.post(f"{live.url}/sessions/{sid}/runs", json={"message": "n"})
                assert quick.status_code == 202, quick.text
                quick_id = quick.json()["run_id"]
                follow = f"{live.url}/sessions/{sid}/runs/{quick_id}/events"
                async with http.stream("GET", follow) as response:
                    assert (await collect(response))[-1].event == "done"
            runs = (await http.get(f"{live.url}/sessions/{sid}/runs")).json()["data"]
            assert len(runs) == 20
            final = (await http.post(f"{live.url}/sessions/{sid}/message", json=body)).json()
            assert final["status"] == "completed"

    asyncio.run(go())


def test_reconnecting_to_a_finished_run_after_its_last_event_is_204(
    live: ThreadServer, tmp_path: Path
) -> None:
    """A browser's EventSource reconnects whenever a stream ends; 204 is how it learns to stop."""
    sid = new_session(live.url, tmp_path, [{"text": "all done"}])
    result = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "hi"}).json()
    url = f"{live.url}/sessions/{sid}/runs/{result['run_id']}/events"
    whole = asyncio.run(read_run(live.url, sid, result["run_id"]))
    last = whole[-1].id
    assert httpx.get(url, headers={"Last-Event-ID": last}).status_code == 204
    tail = asyncio.run(read_run(live.url, sid, result["run_id"], str(int(last) - 1)))
    assert [e.id for e in tail] == [last]


def test_session_channel_refuses_a_last_event_id_of_an_unknown_run(
    live: ThreadServer, tmp_path: Path
) -> None:
    sid = new_session(live.url, tmp_path, [{"text": "all done"}])
    other = new_session(live.url, tmp_path, [{"text": "elsewhere"}])
    mine = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "hi"}).json()
    theirs = httpx.post(f"{live.url}/sessions/{other}/message", json={"message": "hi"}).json()
    url = f"{live.url}/sessions/{sid}/events"
    for resume in ("01J0000000000000000000NONE:3", f"{theirs['run_id']}:1"):
        for asked in (
            {"headers": {"Last-Event-ID": resume}},
            {"params": {"last_event_id": resume}},
        ):
            refused = httpx.get(url, timeout=10, **asked)  # type: ignore[arg-type]
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["type"] == "invalid_request" and "Last-Event-ID" in error["message"]

    async def resumed() -> list[Event]:
        async with httpx.AsyncClient(timeout=30) as http:
            headers = {"Last-Event-ID": f"{mine['run_id']}:1"}
            async with http.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                found = []
                async for event in events(response):
                    found.append(event)
                    if event.event == "done":
                        return found
        return found

    assert asyncio.run(resumed())[-1].json["run_id"] == mine["run_id"]
