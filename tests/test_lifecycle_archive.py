"""Archive and unarchive, TTL expiry by the background sweeper, deleting a running session
(in-process app, real SQLite file)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.ids import now
from server.runs.sweeper import Sweeper
from server.store import is_postgres
from server.store.pg import translate
from tests import pg
from tests.conftest import AppClient, app_client, make_settings, scripted_agent
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def session_with_agent(http: Any, script: list[Any], **session: Any) -> str:
    body = scripted_agent(script, name=f"agent-{time.monotonic_ns()}")
    agent = (await http.post("/agents", json=body)).json()["id"]
    created = await http.post("/sessions", json={"agent_id": agent, **session})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def rows(db: str, sql: str, *params: Any) -> list[Any]:
    if is_postgres(db):
        return pg.rows_of(db, translate(sql), *params)
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_archive_hides_from_list_and_refuses_messages(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await session_with_agent(http, [{"text": "ok"}])
            archived = await http.post(f"/sessions/{sid}/archive")
            assert archived.status_code == 200
            record = archived.json()
            assert record["status"] == "archived" and record["archived_at"]
            again = await http.post(f"/sessions/{sid}/archive")
            assert again.json()["archived_at"] == record["archived_at"]
            assert (await http.get("/sessions")).json()["data"] == []
            listed = (await http.get("/sessions?status=archived")).json()["data"]
            assert [s["id"] for s in listed] == [sid]
            for path in (f"/sessions/{sid}/message", f"/sessions/{sid}/runs"):
                refused = await http.post(path, json={"message": "hi"})
                assert refused.status_code == 409, refused.text
                assert refused.json()["error"]["type"] == "archived"
            resumed = await http.post(
                "/run", json={"prompt": "hi", "session_id": sid, "resume": True}
            )
            assert resumed.status_code == 409
            assert (await http.get(f"/sessions/{sid}/messages")).json()["data"] == []
            back = await http.post(f"/sessions/{sid}/unarchive")
            assert back.status_code == 200
            assert back.json()["status"] == "idle" and back.json()["archived_at"] is None
            assert (await http.post(f"/sessions/{sid}/unarchive")).json() == back.json()
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "hi"})
            assert sent.status_code == 200
            assert [s["id"] for s in (await http.get("/sessions")).json()["data"]] == [sid]

    run(go())


def test_archive_of_a_missing_session_is_404(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            for verb in ("archive", "unarchive"):
                missing = await http.post(f"/sessions/nope/{verb}")
                assert missing.status_code == 404
                assert missing.json()["error"]["type"] == "not_found"

    run(go())


class Ticks:
    """The sweeper's sleep, released one interval at a time by the test: `tick()` returns
    once the sweep it let go has finished and the sweeper sleeps again."""

    def __init__(self) -> None:
        self.asleep = asyncio.Event()
        self.wake = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asleep.set()
        await self.wake.wait()
        self.wake.clear()

    async def tick(self) -> None:
        await asyncio.wait_for(self.asleep.wait(), WAIT_S)
        self.asleep.clear()
        self.wake.set()
        await asyncio.wait_for(self.asleep.wait(), WAIT_S)


WAIT_S = 30  # generous: fails only if something hangs


@asynccontextmanager
async def driven_sweeper(http: AppClient) -> AsyncIterator[tuple[list[str], Ticks]]:
    """A sweeper on the app's store and runner, on a clock the test sets (the app's own
    sweeper waits its default minute, far longer than any of these tests)."""
    clock = [now()]
    ticks = Ticks()
    state = http.app.state
    sweeper = Sweeper(state.store, state.runner, 60, clock=lambda: clock[0], sleep=ticks.sleep)
    sweeper.start()
    try:
        yield clock, ticks
    finally:
        await sweeper.stop()


def test_idle_session_expires_with_everything_it_holds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    db = settings.db
    script = [
        {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {}}]},
        {"text": "Done."},
    ]

    async def go() -> None:
        async with app_client(settings) as http, driven_sweeper(http) as (clock, ticks):
            body = scripted_agent(script, name="tools", tools=["list_files"])
            agent = (await http.post("/agents", json=body)).json()["id"]
            short = {"agent_id": agent, "work_dir": str(tmp_path), "ttl_seconds": 1}
            sid = (await http.post("/sessions", json=short)).json()["id"]
            keep = (await http.post("/sessions", json={})).json()["id"]
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            assert sent.status_code == 200, sent.text
            session = (await http.get(f"/sessions/{sid}")).json()
            assert session["expires_at"] > session["updated_at"]
            await http.get(f"/sessions/{sid}")  # reading is not activity
            assert (await http.get(f"/sessions/{sid}")).json()["expires_at"] == session[
                "expires_at"
            ]
            await http.flush()
            assert rows(db, "SELECT count(*) FROM events")[0][0] > 0
            clock[0] = session["updated_at"]  # not yet expired
            await ticks.tick()
            assert (await http.get(f"/sessions/{sid}")).status_code == 200
            clock[0] = session["expires_at"]
            await ticks.tick()
            assert (await http.get(f"/sessions/{sid}")).status_code == 404
            assert (await http.get(f"/sessions/{keep}")).status_code == 200
            await http.flush()

        for table in ("messages", "runs", "message_search"):
            assert rows(db, f"SELECT count(*) FROM {table} WHERE session_id = ?", sid) == [(0,)]
        assert rows(db, "SELECT count(*) FROM events") == [(0,)]

    run(go())


def test_activity_keeps_a_session_alive(tmp_path: Path) -> None:
    async def go() -> None:
        async with (
            app_client(make_settings(tmp_path)) as http,
            driven_sweeper(http) as (clock, ticks),
        ):
            sid = await session_with_agent(http, [{"text": "ok"}], ttl_seconds=1)
            created = (await http.get(f"/sessions/{sid}")).json()
            # the message comes a millisecond later at least, so it moves expires_at on
            await until(lambda: now() > created["updated_at"], "a later timestamp", poll=0.001)
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "still here"})
            assert sent.status_code == 200
            touched = (await http.get(f"/sessions/{sid}")).json()
            assert touched["expires_at"] > created["expires_at"]
            clock[0] = created["expires_at"]  # the time it would have gone without the message
            await ticks.tick()
            assert (await http.get(f"/sessions/{sid}")).status_code == 200
            clock[0] = touched["expires_at"]
            await ticks.tick()
            assert (await http.get(f"/sessions/{sid}")).status_code == 404

    run(go())


def test_the_app_sweeps_at_its_interval(tmp_path: Path) -> None:
    """The app's own sweeper, on the real clock: the session goes a second after its last
    activity; waited for with a generous deadline."""

    async def go() -> None:
        async with app_client(make_settings(tmp_path, sweep_interval_s=0.05)) as http:
            sid = await session_with_agent(http, [{"text": "ok"}], ttl_seconds=1)

            async def expired() -> bool:
                return (await http.get(f"/sessions/{sid}")).status_code == 404

            await until(expired, "the session to expire", WAIT_S)

    run(go())


def test_deleting_a_running_session_cancels_its_run(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(200))

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = scripted_agent([{"text": words}], options={"token_delay_ms": 20})
            agent = (await http.post("/agents", json=body)).json()["id"]
            sid = (await http.post("/sessions", json={"agent_id": agent})).json()["id"]
            started = await http.post(f"/sessions/{sid}/runs", json={"message": "go"})
            assert started.status_code == 202
            run_path = f"/sessions/{sid}/runs/{started.json()['run_id']}"
            assert (await http.get(run_path)).json()["status"] == "running"  # for 4 s of words
            deleted = await asyncio.wait_for(http.delete(f"/sessions/{sid}"), WAIT_S)
            assert deleted.status_code == 204
            assert (await http.get(f"/sessions/{sid}")).status_code == 404
            await http.flush()

        db = make_settings(tmp_path).db
        assert rows(db, "SELECT count(*) FROM runs") == [(0,)]

    run(go())
