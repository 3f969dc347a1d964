"""Two `sessiond serve` processes on one PostgreSQL: a run executing on one is followed live
on the other, a process killed mid-run has its run interrupted by the other within the lease
timeout, messages raced at one session from both with `if_busy: queue` are each answered
once and in the order of their tickets, a repeated Idempotency-Key starts one run, a cancel
reaches the run wherever it executes, and a paused run resumed on the other process takes
the session there."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import pg
from tests.conftest import scripted_agent
from tests.live import ProcessServer
from tests.sse import collect, events, typed
from tests.waiting import wait_until

LEASE_S = 2.0


@pytest.fixture
def pair(tmp_path: Path, pg_url: str) -> Iterator[tuple[ProcessServer, ProcessServer]]:
    env = {"SESSIOND_EVENT_FLUSH_MS": "20"}
    flags = ("--lease-timeout", str(LEASE_S), "--ping-interval", "20")
    a = ProcessServer(pg_url, tmp_path, *flags, env=env).start()  # type: ignore[arg-type]
    b = ProcessServer(pg_url, tmp_path, *flags, env=env).start()  # type: ignore[arg-type]
    try:
        yield a, b
    finally:
        for server in (a, b):
            if server.proc is not None and server.proc.poll() is None:
                server.stop()


def new_session(url: str, work_dir: Path, script: list[dict[str, Any]], delay_ms: int = 0) -> str:
    body = scripted_agent(script, name=f"a{time.monotonic_ns()}")
    body["options"]["token_delay_ms"] = delay_ms
    agent = httpx.post(f"{url}/agents", json=body).json()["id"]
    made = httpx.post(f"{url}/sessions", json={"agent_id": agent, "work_dir": str(work_dir)})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def events_of(url: str, headers: dict[str, str] | None = None) -> list[Any]:
    async def read() -> list[Any]:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream("GET", url, headers=headers or {}) as response,
        ):
            assert response.status_code == 200, await response.aread()
            return typed(await collect(response))

    return asyncio.run(read())


WORDS = " ".join(f"w{i}" for i in range(60))


def start_stream(url: str, sid: str) -> str:
    """Start a streamed run on `url`, keep reading it in the background; its run id."""
    ready: concurrent.futures.Future[str] = concurrent.futures.Future()

    async def stream() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "POST", f"{url}/sessions/{sid}/message/stream", json={"message": "go"}
            ) as response,
        ):
            ready.set_result(response.headers["sessiond-run-id"])
            try:
                async for _ in response.aiter_bytes():
                    pass
            except httpx.HTTPError:
                pass  # its server was killed

    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.submit(asyncio.run, stream())
    pool.shutdown(wait=False)
    return ready.result(30)


def test_a_run_on_a_is_followed_live_on_b_whole_and_once(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": WORDS}], delay_ms=40)
    run_id = start_stream(a.url, sid)
    path = f"/sessions/{sid}/runs/{run_id}/events"
    run_url = f"{a.url}/sessions/{sid}/runs/{run_id}"
    seen_running: list[bool] = []

    async def follow() -> list[Any]:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream("GET", b.url + path) as response,
        ):
            got = []
            async for event in events(response):
                got.append(event)
                if event.event == "text_delta" and not seen_running:  # live, not replayed
                    seen_running.append((await http.get(run_url)).json()["status"] == "running")
                if event.event == "done":
                    return typed(got)
        raise AssertionError("the stream ended before done")

    got = asyncio.run(follow())  # while it runs on A (B's pings are 20 s apart: word came)
    assert seen_running == [True]
    assert got[-1].event == "done"
    seqs = [int(e.id) for e in got]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert "".join(e.json["text"] for e in got if e.event == "text_delta") == WORDS
    # from the middle, on either process: the rest, once
    middle = seqs[len(seqs) // 2]
    rest = events_of(b.url + path, {"Last-Event-ID": str(middle)})
    assert [int(e.id) for e in rest] == [s for s in seqs if s > middle]
    assert events_of(a.url + path) == got


def test_kill_a_mid_run_and_b_interrupts_it_within_the_lease_timeout(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": WORDS}], delay_ms=100)
    run_id = start_stream(a.url, sid)
    run_url = f"{b.url}/sessions/{sid}/runs/{run_id}"
    wait_until(lambda: httpx.get(run_url).json()["status"] == "running", "the run on B's view")
    a.kill()
    # the bound: the lease timeout and a second (the deadline is the assertion)
    wait_until(
        lambda: httpx.get(run_url).json()["status"] == "interrupted",
        "B to mark the run interrupted",
        timeout=LEASE_S + 1,
    )
    got = events_of(f"{run_url}/events")
    assert [e.event for e in got[-2:]] == ["error", "done"]
    assert got[-1].json["status"] == "interrupted"
    session = httpx.get(f"{b.url}/sessions/{sid}").json()
    assert session["status"] == "idle"
    # the session takes a new message on B: its history was repaired
    sent = httpx.post(f"{b.url}/sessions/{sid}/message", json={"message": "again"}, timeout=60)
    assert sent.status_code == 200, sent.text


def test_fifty_messages_raced_from_both_processes_are_each_answered_once_in_ticket_order(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path, pg_url: str
) -> None:
    """Arrival is the order the database handed out the session's queue tickets (each
    message's run is stored queued with the next one as its request comes in): the runs
    must have run in that order, whichever process took each message."""
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": "ok"}])

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as http:
            sends = [
                http.post(
                    f"{(a, b)[i % 2].url}/sessions/{sid}/message",
                    json={"message": f"m{i}", "if_busy": "queue"},
                )
                for i in range(50)
            ]
            return await asyncio.gather(*sends)

    answers = asyncio.run(race())
    assert [r.status_code for r in answers] == [200] * 50, [
        r.text for r in answers if r.status_code != 200
    ][:3]
    messages = httpx.get(f"{a.url}/sessions/{sid}/messages?limit=1000").json()["data"]
    assert len(messages) == 100
    users = [m for m in messages if m["role"] == "user"]
    assert sorted(m["content"][0]["text"] for m in users) == sorted(f"m{i}" for i in range(50))
    # every message is followed by its own answer: the runs never overlapped
    for user, answer in zip(messages[::2], messages[1::2], strict=True):
        assert user["role"] == "user" and answer["role"] == "assistant"
        assert answer["run_id"] == user["run_id"]
    runs = httpx.get(f"{b.url}/sessions/{sid}/runs?limit=100").json()["data"]
    assert len(runs) == 50 and {r["status"] for r in runs} == {"completed"}
    tickets = dict(pg.rows_of(pg_url, "SELECT id, ticket FROM runs WHERE session_id = $1", sid))
    assert sorted(tickets.values()) == list(range(1, 51))  # one each, none lost
    answered = [user["run_id"] for user in messages[::2]]  # in the order the history has them
    assert [tickets[run_id] for run_id in answered] == list(range(1, 51))


def test_an_idempotency_key_repeated_across_processes_starts_one_run(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": "once"}], delay_ms=20)

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            sends = [
                http.post(
                    f"{server.url}/sessions/{sid}/message",
                    json={"message": "same"},
                    headers={"Idempotency-Key": "k-1"},
                )
                for server in (a, b, a, b)
            ]
            return await asyncio.gather(*sends)

    answers = asyncio.run(race())
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert len({r.json()["run_id"] for r in answers}) == 1
    runs = httpx.get(f"{a.url}/sessions/{sid}/runs").json()["data"]
    assert len(runs) == 1


def test_a_cancel_sent_to_b_stops_the_run_on_a(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": WORDS}], delay_ms=100)
    run_id = start_stream(a.url, sid)
    cancelled = httpx.post(f"{b.url}/sessions/{sid}/runs/{run_id}/cancel", timeout=60)
    assert cancelled.status_code < 300, cancelled.text
    run = httpx.get(f"{a.url}/sessions/{sid}/runs/{run_id}").json()
    assert run["status"] == "cancelled"


def test_a_session_busy_on_a_is_busy_on_b(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": WORDS}], delay_ms=100)
    run_id = start_stream(a.url, sid)
    refused = httpx.post(f"{b.url}/sessions/{sid}/message", json={"message": "now"})
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "session_busy"
    interrupting = httpx.post(
        f"{b.url}/sessions/{sid}/message",
        json={"message": "now", "if_busy": "interrupt"},
        timeout=60,
    )
    assert interrupting.status_code == 200, interrupting.text
    first = httpx.get(f"{a.url}/sessions/{sid}/runs/{run_id}").json()
    assert first["status"] == "interrupted"


def test_the_session_channel_on_b_carries_a_run_executing_on_a(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    a, b = pair
    sid = new_session(a.url, tmp_path, [{"text": WORDS}], delay_ms=20)
    first = httpx.post(f"{a.url}/sessions/{sid}/message", json={"message": "one"}, timeout=60)
    first_id = first.json()["run_id"]
    last = int(events_of(f"{a.url}/sessions/{sid}/runs/{first_id}/events")[-1].id)
    opened: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def watch() -> list[Any]:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "GET",
                f"{b.url}/sessions/{sid}/events",
                headers={"Last-Event-ID": f"{first_id}:{last}"},  # everything after it
            ) as response,
        ):
            assert response.status_code == 200
            opened.set_result(None)
            return typed(await collect(response))  # up to the next run's done

    pool = concurrent.futures.ThreadPoolExecutor(1)
    watched = pool.submit(asyncio.run, watch())
    opened.result(30)
    run_id = start_stream(a.url, sid)
    got = watched.result(60)
    pool.shutdown()
    assert got[-1].event == "done"
    assert "".join(e.json["text"] for e in got if e.event == "text_delta") == WORDS
    replay = events_of(f"{a.url}/sessions/{sid}/runs/{run_id}/events")
    assert {e.json["run_id"] for e in got} == {run_id}  # the channel names each event's run

    def bare(event: Any) -> dict[str, Any]:
        return {k: v for k, v in event.json.items() if k != "run_id"}

    assert [bare(e) for e in got] == [bare(e) for e in replay]


WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "executor": "client",
}


def test_a_run_paused_on_a_and_resumed_on_b_takes_the_session_there(
    pair: tuple[ProcessServer, ProcessServer], tmp_path: Path
) -> None:
    """The resume on B takes the session's lease: while the resumed run goes on there, A
    refuses a new message for the session (it would otherwise run beside it), and takes one
    once B is done with it."""
    a, b = pair
    script = [
        {"text": "Checking.", "tool_calls": [{"name": "get_weather", "input": {"city": "P"}}]},
        {"text": WORDS},
        {"text": "next"},
    ]
    body = scripted_agent(script, name=f"w{time.monotonic_ns()}", tools=[WEATHER])
    body["options"]["token_delay_ms"] = 40
    agent = httpx.post(f"{a.url}/agents", json=body).json()["id"]
    made = httpx.post(f"{a.url}/sessions", json={"agent_id": agent, "work_dir": str(tmp_path)})
    sid = made.json()["id"]
    paused = httpx.post(f"{a.url}/sessions/{sid}/message", json={"message": "go"}, timeout=60)
    run_id = paused.json()["run_id"]
    run = httpx.get(f"{a.url}/sessions/{sid}/runs/{run_id}").json()
    assert run["status"] == "requires_action", run
    [call] = run["pending_tool_calls"]
    results = {"results": [{"tool_use_id": call["id"], "content": "sunny"}]}
    resumed: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
    streaming: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def resume() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream(
                "POST", f"{b.url}/sessions/{sid}/runs/{run_id}/tool_results", json=results
            ) as response,
        ):
            assert response.status_code == 200, await response.aread()
            got = []
            async for event in events(response):
                got.append(event)
                if event.event == "text_delta" and not streaming.done():
                    streaming.set_result(None)
                if event.event == "done":
                    break
            resumed.set_result(typed(got))

    pool = concurrent.futures.ThreadPoolExecutor(1)
    pool.submit(asyncio.run, resume())
    streaming.result(30)  # the resumed run is producing its reply on B
    refused = httpx.post(f"{a.url}/sessions/{sid}/message", json={"message": "now"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["type"] == "session_busy"
    got = resumed.result(60)
    pool.shutdown()
    assert got[-1].json["status"] == "completed"
    assert "".join(e.json["text"] for e in got if e.event == "text_delta") == WORDS
    after = httpx.post(f"{a.url}/sessions/{sid}/message", json={"message": "again"}, timeout=60)
    assert after.status_code == 200, after.text
    runs = httpx.get(f"{a.url}/sessions/{sid}/runs").json()["data"]
    assert [r["id"] for r in runs] == [after.json()["run_id"], run_id]
    assert runs[1]["status"] == "completed"
