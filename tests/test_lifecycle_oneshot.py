"""POST /run: a new session, resume, continue (most recent of a work_dir), fork_session,
no_persistence (the database's content untouched), and stream (real uvicorn for SSE)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.store import is_postgres
from tests import pg
from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.sse import collect, typed
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def make_agent(http: Any, text: str = "done") -> str:
    body = scripted_agent([{"text": text}], name=f"a{time.monotonic_ns()}")
    return str((await http.post("/agents", json=body)).json()["id"])


async def texts(http: Any, sid: str) -> list[str]:
    data = (await http.get(f"/sessions/{sid}/messages")).json()["data"]
    return ["".join(b.get("text", "") for b in m["content"]) for m in data]


def table_contents(db: str) -> dict[str, list[Any]]:
    if is_postgres(db):
        return dict(pg.table_contents(db))
    with sqlite3.connect(db) as conn:
        names = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        return {name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"'))) for name in names}


def test_new_session_then_resume(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await make_agent(http)
            first = await http.post(
                "/run", json={"prompt": "hello", "agent_id": agent, "work_dir": str(tmp_path)}
            )
            assert first.status_code == 200, first.text
            answer = first.json()
            assert answer["response"] == "done" and answer["status"] == "completed"
            sid = answer["session_id"]
            assert first.headers["session-id"] == sid
            session = (await http.get(f"/sessions/{sid}")).json()
            assert session["agent_id"] == agent and session["work_dir"] == str(tmp_path.resolve())
            again = await http.post(
                "/run", json={"prompt": "more", "session_id": sid, "resume": True}
            )
            assert again.status_code == 200 and again.json()["session_id"] == sid
            assert await texts(http, sid) == ["hello", "done", "more", "done"]
            by_name = await http.patch(f"/sessions/{sid}", json={"name": "named"})
            assert by_name.status_code == 200
            third = await http.post(
                "/run", json={"prompt": "x", "session_id": "named", "resume": True}
            )
            assert third.json()["session_id"] == sid

    run(go())


def test_continue_picks_the_most_recent_session_of_the_work_dir(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await make_agent(http)

            async def session(work_dir: Path) -> str:
                body = {"agent_id": agent, "work_dir": str(work_dir)}
                return str((await http.post("/sessions", json=body)).json()["id"])

            older, newer, elsewhere = await session(one), await session(one), await session(two)
            await http.post(f"/sessions/{older}/message", json={"message": "touch"})
            # older is now the most recently active session of `one`, elsewhere of `two`
            cont = await http.post(
                "/run", json={"prompt": "p", "continue": True, "work_dir": str(one)}
            )
            assert cont.status_code == 200, cont.text
            assert cont.json()["session_id"] == older
            cont = await http.post("/run", json={"prompt": "q", "continue": True})
            assert cont.json()["session_id"] == older  # the most recent of all
            await http.post(f"/sessions/{elsewhere}/message", json={"message": "touch"})
            cont = await http.post("/run", json={"prompt": "r", "continue": True})
            assert cont.json()["session_id"] == elsewhere
            await http.post(f"/sessions/{older}/archive")
            cont = await http.post(
                "/run", json={"prompt": "s", "continue": True, "work_dir": str(one)}
            )
            assert cont.json()["session_id"] == newer  # archived ones are not continued
            (tmp_path / "three").mkdir()
            none = await http.post(
                "/run", json={"prompt": "t", "continue": True, "work_dir": str(tmp_path / "three")}
            )
            assert none.status_code == 404 and none.json()["error"]["type"] == "not_found"

    run(go())


def test_fork_session(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await make_agent(http)
            sid = (await http.post("/run", json={"prompt": "base", "agent_id": agent})).json()[
                "session_id"
            ]
            forked = await http.post(
                "/run", json={"prompt": "branch", "session_id": sid, "fork_session": True}
            )
            assert forked.status_code == 200, forked.text
            fid = forked.json()["session_id"]
            assert fid != sid
            fork = (await http.get(f"/sessions/{fid}")).json()
            assert fork["parent_id"] == sid and fork["agent_id"] == agent
            assert await texts(http, fid) == ["base", "done", "branch", "done"]
            assert await texts(http, sid) == ["base", "done"]

    run(go())


def test_no_persistence_leaves_the_database_unchanged(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with app_client(settings) as http:
            agent = await make_agent(http, "ephemeral answer")
            sid = (await http.post("/run", json={"prompt": "keep", "agent_id": agent})).json()[
                "session_id"
            ]
            fresh = await http.post("/run", json={"prompt": "hi", "agent_id": agent})
            await http.flush()
            before = table_contents(settings.db)
            assert before["messages"] and before["events"] and before["message_search"]
            cases = [
                {"agent_id": agent},
                {"session_id": sid, "resume": True},
                {"continue": True},
                {"session_id": sid, "fork_session": True},
            ]
            for case in cases:
                response = await http.post(
                    "/run", json={"prompt": "what if?", "no_persistence": True, **case}
                )
                assert response.status_code == 200, (case, response.text)
                answer = response.json()
                assert answer["response"] == "ephemeral answer"
                assert answer["status"] == "completed"
                missing = await http.get(f"/sessions/{answer['session_id']}")
                assert missing.status_code == 404
            resumed = await http.post(
                "/run",
                json={"prompt": "hi", "no_persistence": True, "session_id": sid, "resume": True},
            )
            # the ephemeral run saw the session's history: a longer input than a fresh one
            assert resumed.json()["usage"]["input_tokens"] > fresh.json()["usage"]["input_tokens"]
            await http.flush()
            assert table_contents(settings.db) == before

    run(go())


BAD = [
    ({}, 400, "prompt"),
    ({"prompt": ""}, 400, "message"),
    ({"prompt": "x", "resume": True}, 400, "session_id"),
    ({"prompt": "x", "fork_session": True}, 400, "session_id"),
    ({"prompt": "x", "session_id": "S"}, 400, "session_id"),
    ({"prompt": "x", "session_id": "S", "resume": True, "fork_session": True}, 400, "session_id"),
    ({"prompt": "x", "continue": True, "session_id": "S"}, 400, "continue"),
    ({"prompt": "x", "session_id": "nope", "resume": True}, 404, None),
    ({"prompt": "x", "agent_id": "nope"}, 404, None),
    ({"prompt": "x", "work_dir": "/"}, 400, "work_dir"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"prompt": "x", "bogus": 1}, 400, "bogus"),
    ({"prompt": "x", "no_persistence": True, "agent_id": "nope"}, 404, None),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_runs_store_nothing(
    tmp_path: Path, body: dict[str, Any], status: int, field: str | None
) -> None:
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with app_client(settings) as http:
            await http.flush()
            before = table_contents(settings.db)
            response = await http.post("/run", json=body)
            assert response.status_code == status, response.text
            assert response.json()["error"].get("field") == field
            assert table_contents(settings.db) == before

    run(go())


def test_resume_with_another_work_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await make_agent(http)
            sid = (await http.post("/run", json={"prompt": "x", "agent_id": agent})).json()[
                "session_id"
            ]
            body = {
                "prompt": "y",
                "session_id": sid,
                "resume": True,
                "work_dir": str(tmp_path / "a"),
            }
            refused = await http.post("/run", json=body)
            assert refused.status_code == 400 and refused.json()["error"]["field"] == "work_dir"

    run(go())


async def stream_run(url: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", f"{url}/run", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return response.headers["session-id"], typed(await collect(response))


def test_stream(live: ThreadServer) -> None:
    agent = httpx.post(
        f"{live.url}/agents", json=scripted_agent([{"text": "streamed words here"}])
    ).json()["id"]
    sid, got = asyncio.run(stream_run(live.url, {"prompt": "go", "agent_id": agent}))
    kinds = [e.event for e in got]
    assert kinds[0] == "message_start" and kinds[-1] == "done"
    assert "".join(e.json["text"] for e in got if e.event == "text_delta") == "streamed words here"
    messages = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    runs = f"{live.url}/sessions/{sid}/runs"
    wait_until(
        lambda: httpx.get(runs).json()["data"][0]["status"] == "completed",
        "the run's end to be recorded",
    )
    live.flush()

    before = table_contents(live.settings.db)
    eid, got = asyncio.run(
        stream_run(
            live.url, {"prompt": "go", "session_id": sid, "resume": True, "no_persistence": True}
        )
    )
    assert eid != sid and got[-1].event == "done" and got[-1].json["status"] == "completed"
    live.flush()
    assert table_contents(live.settings.db) == before
