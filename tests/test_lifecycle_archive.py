"""Archive and unarchive, TTL expiry by the background sweeper, deleting a running session
(in-process app, real SQLite file)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.conftest import app_client, make_settings, scripted_agent


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def session_with_agent(http: Any, script: list[Any], **session: Any) -> str:
    body = scripted_agent(script, name=f"agent-{time.monotonic_ns()}")
    agent = (await http.post("/agents", json=body)).json()["id"]
    created = await http.post("/sessions", json={"agent_id": agent, **session})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def rows(db: Path, sql: str, *params: Any) -> list[Any]:
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


def test_idle_session_expires_with_everything_it_holds(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sweep_interval_s=0.1)
    db = Path(settings.db)
    script = [
        {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {}}]},
        {"text": "Done."},
    ]

    async def go() -> None:
        async with app_client(settings) as http:
            body = scripted_agent(script, name="tools", tools=["list_files"])
            agent = (await http.post("/agents", json=body)).json()["id"]
            short = {"agent_id": agent, "work_dir": str(tmp_path), "ttl_seconds": 1}
            sid = (await http.post("/sessions", json=short)).json()["id"]
            keep = (await http.post("/sessions", json={})).json()["id"]
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            assert sent.status_code == 200, sent.text
            session = (await http.get(f"/sessions/{sid}")).json()
            assert session["expires_at"] > session["updated_at"]
            await asyncio.sleep(0.2)
            await http.get(f"/sessions/{sid}")  # reading is not activity
            assert rows(db, "SELECT count(*) FROM events")[0][0] > 0
            deadline = time.monotonic() + 5
            while (await http.get(f"/sessions/{sid}")).status_code == 200:
                assert time.monotonic() < deadline, "the session did not expire"
                await asyncio.sleep(0.1)
            assert (await http.get(f"/sessions/{keep}")).status_code == 200
            await asyncio.sleep(0.1)  # let the writer commit

        for table in ("messages", "runs", "message_search"):
            assert rows(db, f"SELECT count(*) FROM {table} WHERE session_id = ?", sid) == [(0,)]
        assert rows(db, "SELECT count(*) FROM events") == [(0,)]

    run(go())


def test_activity_keeps_a_session_alive(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sweep_interval_s=0.1)

    async def go() -> None:
        async with app_client(settings) as http:
            sid = await session_with_agent(http, [{"text": "ok"}], ttl_seconds=1)
            started = time.monotonic()
            await asyncio.sleep(0.6)
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "still here"})
            assert sent.status_code == 200
            await asyncio.sleep(0.7)
            assert time.monotonic() - started > 1.2
            assert (await http.get(f"/sessions/{sid}")).status_code == 200
            await asyncio.sleep(1.0)
            assert (await http.get(f"/sessions/{sid}")).status_code == 404

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
            await asyncio.sleep(0.2)
            clock = time.monotonic()
            assert (await http.delete(f"/sessions/{sid}")).status_code == 204
            assert time.monotonic() - clock < 2
            assert (await http.get(f"/sessions/{sid}")).status_code == 404
            await asyncio.sleep(0.1)

        db = Path(make_settings(tmp_path).db)
        assert rows(db, "SELECT count(*) FROM runs") == [(0,)]

    run(go())
