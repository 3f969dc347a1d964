"""What the runner keeps between runs (session records, agents, histories) never outlives a
change: whatever changed since, the next message sees it (in-process app, real SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from tests.conftest import app_client, make_settings, scripted_agent

PROBE = {"name": "probe", "description": "a client tool", "input_schema": {"type": "object"}}


async def agent(http: Any, name: str, script: list[Any], **extra: Any) -> str:
    created = await http.post("/agents", json=scripted_agent(script, name=name, **extra))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def new_session(http: Any, agent_id: str, **fields: Any) -> str:
    created = await http.post("/sessions", json={"agent_id": agent_id, **fields})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def say(http: Any, key: str, **body: Any) -> Any:
    return await http.post(f"/sessions/{key}/message", json={"message": "hi", **body})


def test_a_changed_session_is_seen_by_the_next_message(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            a = await agent(http, "a", [{"text": "from a"}], tools=[PROBE])
            b = await agent(http, "b", [{"text": "from b"}])
            sid = await new_session(http, a, name="first", work_dir=str(tmp_path))
            assert (await say(http, "first")).json()["response"] == "from a"
            assert (await say(http, sid)).json()["response"] == "from a"

            await http.patch(f"/sessions/{sid}", json={"agent_id": b, "name": "second"})
            # the kept agent would refuse this tool as listed twice; the session's new one not
            sent = await say(http, sid, tools=[PROBE])
            assert sent.status_code == 200 and sent.json()["response"] == "from b"
            assert (await say(http, "first")).status_code == 404
            assert (await say(http, "second")).json()["response"] == "from b"

            await http.post(f"/sessions/{sid}/archive")
            refused = await say(http, "second")
            assert refused.status_code == 409 and refused.json()["error"]["type"] == "archived"
            await http.post(f"/sessions/{sid}/unarchive")
            assert (await say(http, "second")).status_code == 200

            await http.delete(f"/sessions/{sid}")
            assert (await say(http, sid)).status_code == 404

    asyncio.run(go())


def test_a_changed_work_dir_is_the_next_run_s(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "in-one.txt").write_text("1")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "in-two.txt").write_text("2")
    script = [{"tool_calls": [{"name": "list_files", "input": {"path": "."}}]}, {"text": "ok"}]

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            a = await agent(http, "lister", script, tools=["list_files"])
            sid = await new_session(http, a, work_dir=str(tmp_path / "one"))
            first = (await say(http, sid)).json()
            assert "in-one.txt" in first["tool_calls"][0]["output"]
            await http.patch(f"/sessions/{sid}", json={"work_dir": str(tmp_path / "two")})
            second = (await say(http, sid)).json()
            assert "in-two.txt" in second["tool_calls"][0]["output"]

    asyncio.run(go())


def test_a_replaced_agent_is_the_next_run_s(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            a = await agent(http, "a", [{"text": "first version"}])
            sid = await new_session(http, a)
            assert (await say(http, sid)).json()["response"] == "first version"
            options = {"script": [{"text": "second version"}]}
            replaced = await http.put(f"/agents/{a}", json={"options": options})
            assert replaced.status_code == 200, replaced.text
            assert (await say(http, sid)).json()["response"] == "second version"

    asyncio.run(go())


def test_history_kept_across_turns_matches_the_stored_one(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            a = await agent(http, "a", [{"text": "ok"}])
            sid = await new_session(http, a)
            words = "forty characters of text, ten tokens ok"
            usage = [
                (await say(http, sid, message=words)).json()["usage"]["input_tokens"]
                for _ in range(4)
            ]
            assert usage == sorted(usage) and len(set(usage)) == 4  # each saw a longer history
            session = (await http.get(f"/sessions/{sid}")).json()
            assert session["message_count"] == 8 and session["usage"]["input_tokens"] == sum(usage)

    asyncio.run(go())


def test_a_new_sessions_first_message_reads_neither_session_nor_history(tmp_path: Path) -> None:
    async def go() -> None:
        app = create_app(make_settings(tmp_path))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as http:
                a = await agent(http, "a", [{"text": "first reply"}])
                sid = await new_session(http, a)
                store = app.state.store

                async def no_reads(*args: Any) -> Any:
                    raise AssertionError("read the database")

                store.sessions.get = store.messages.history = no_reads
                sent = await say(http, sid)
                assert sent.status_code == 200 and sent.json()["response"] == "first reply"

    asyncio.run(go())
