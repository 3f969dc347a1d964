"""Agents and sessions: CRUD round trips and every error kind, table-driven, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.ids import now
from tests.conftest import app_client, make_settings, scripted_agent
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_agent_crud_round_trip(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            created = await http.post("/agents", json=scripted_agent([{"text": "hi"}]))
            assert created.status_code == 201, created.text
            agent = created.json()
            assert agent["max_steps"] == 16 and agent["tools"] == []
            got = await http.get(f"/agents/{agent['id']}")
            assert got.json() == agent
            put = await http.put(f"/agents/{agent['id']}", json={"system": "be brief"})
            assert put.status_code == 200 and put.json()["system"] == "be brief"
            listed = (await http.get("/agents")).json()
            assert {a["id"] for a in listed["data"]} == {"default", agent["id"]}
            assert listed["next_cursor"] is None
            assert (await http.delete(f"/agents/{agent['id']}")).status_code == 204
            assert (await http.get(f"/agents/{agent['id']}")).status_code == 404

    run(go())


def test_session_crud_round_trip(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = {"title": "first", "metadata": {"k": [1, 2]}, "work_dir": str(tmp_path)}
            created = await http.post("/sessions", json=body)
            assert created.status_code == 201, created.text
            session = created.json()
            assert session["agent_id"] == "default" and session["status"] == "idle"
            assert session["work_dir"] == str(tmp_path.resolve())
            assert session["usage"] == {"input_tokens": 0, "output_tokens": 0}
            assert len(session["id"]) == 26
            assert (await http.get(f"/sessions/{session['id']}")).json() == session
            updated = await http.put(f"/sessions/{session['id']}", json={"title": "renamed"})
            assert updated.json()["title"] == "renamed"
            assert updated.json()["metadata"] == {"k": [1, 2]}
            assert (await http.delete(f"/sessions/{session['id']}")).status_code == 204
            assert (await http.get(f"/sessions/{session['id']}")).status_code == 404

    run(go())


def test_sessions_list_newest_activity_first_with_cursor(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            made = [(await http.post("/sessions", json={})).json() for _ in range(5)]
            ids = [m["id"] for m in made]
            # timestamps have milliseconds: touch the first once the clock is past the last
            # one's, or the two tie and the id decides
            wait_until(lambda: now() > made[-1]["updated_at"], "the clock to move on")
            await http.put(f"/sessions/{ids[0]}", json={"title": "touched"})
            seen: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/sessions", params=params)).json()
                seen += [s["id"] for s in page["data"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == [ids[0], ids[4], ids[3], ids[2], ids[1]]

    run(go())


ERRORS: list[tuple[str, str, Any, int, str, str | None]] = [
    ("POST", "/agents", b"{not json", 400, "invalid_request", None),
    ("POST", "/agents", {"name": "a"}, 400, "invalid_request", "provider"),
    (
        "POST",
        "/agents",
        {"name": "a", "provider": "scripted", "bogus": 1},
        400,
        "invalid_request",
        "bogus",
    ),
    ("POST", "/agents", {"name": 5, "provider": "scripted"}, 400, "invalid_request", "name"),
    ("POST", "/agents", {"name": "a", "provider": "nope"}, 400, "invalid_request", "provider"),
    (
        "POST",
        "/agents",
        {"name": "a", "provider": "scripted", "tools": ["rm_rf"]},
        400,
        "invalid_request",
        "tools",
    ),
    (
        "POST",
        "/agents",
        {"name": "a", "provider": "scripted", "max_steps": 0},
        400,
        "invalid_request",
        "max_steps",
    ),
    ("POST", "/agents", {"name": "default", "provider": "echo"}, 409, "conflict", "name"),
    ("GET", "/agents/nope", None, 404, "not_found", None),
    ("DELETE", "/agents/default", None, 409, "conflict", None),
    ("POST", "/sessions", {"agent_id": "nope"}, 404, "not_found", None),
    ("POST", "/sessions", {"work_dir": "/"}, 400, "invalid_request", "work_dir"),
    ("POST", "/sessions", {"title": ["x"]}, 400, "invalid_request", "title"),
    ("POST", "/sessions", [], 400, "invalid_request", None),
    (
        "POST",
        "/sessions",
        b'{"metadata": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        400,
        "invalid_request",
        None,
    ),
    ("GET", "/sessions/01ZZZZZZZZZZZZZZZZZZZZZZZZ", None, 404, "not_found", None),
    ("GET", "/sessions?limit=0", None, 400, "invalid_request", "limit"),
    ("GET", "/sessions?limit=abc", None, 400, "invalid_request", "limit"),
    ("GET", "/sessions?cursor=%%%", None, 400, "invalid_request", "cursor"),
    ("GET", "/nowhere", None, 404, "not_found", None),
    ("DELETE", "/sessions", None, 405, "method_not_allowed", None),
    ("POST", "/sessions/{sid}/message", {"message": ""}, 400, "invalid_request", "message"),
    ("POST", "/sessions/{sid}/message", {"msg": "hi"}, 400, "invalid_request", None),
    (
        "POST",
        "/sessions/{sid}/message",
        {"message": "hi", "if_busy": "x"},
        400,
        "invalid_request",
        "if_busy",
    ),
    ("POST", "/sessions/{sid}/message", b"", 400, "invalid_request", None),
    (
        "POST",
        "/sessions/{sid}/message",
        {"message": "x" * 2_000_000},
        413,
        "payload_too_large",
        None,
    ),
    ("POST", "/sessions/nope/message", {"message": "hi"}, 404, "not_found", None),
    ("GET", "/sessions/{sid}/messages?after=-1", None, 400, "invalid_request", "after"),
    ("GET", "/sessions/{sid}/runs/nope", None, 404, "not_found", None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "kind", "field"), ERRORS)
def test_errors_have_one_shape_and_store_nothing(
    tmp_path: Path, method: str, path: str, body: Any, status: int, kind: str, field: str | None
) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = (await http.post("/sessions", json={})).json()["id"]
            before = await snapshot(http, sid)
            kwargs: dict[str, Any] = {}
            if isinstance(body, bytes):
                kwargs["content"] = body
                kwargs["headers"] = {"content-type": "application/json"}
            elif body is not None:
                kwargs["json"] = body
            response = await http.request(method, path.replace("{sid}", sid), **kwargs)
            assert response.status_code == status, response.text
            payload = response.json()
            assert payload["type"] == "error"
            assert payload["error"]["type"] == kind
            assert payload["error"]["message"]
            if field is not None:
                assert payload["error"]["field"] == field
            assert await snapshot(http, sid) == before

    run(go())


async def snapshot(http: Any, sid: str) -> Any:
    return (
        (await http.get("/agents")).json()["data"],
        (await http.get("/sessions")).json()["data"],
        (await http.get(f"/sessions/{sid}/messages")).json()["data"],
        (await http.get(f"/sessions/{sid}/runs")).json()["data"],
    )


def test_deleting_an_agent_in_use_is_a_conflict(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = (await http.post("/agents", json=scripted_agent([{"text": "x"}]))).json()
            await http.post("/sessions", json={"agent_id": agent["id"]})
            response = await http.delete(f"/agents/{agent['id']}")
            assert response.status_code == 409
            assert "used by 1 session" in response.json()["error"]["message"]

    run(go())


def test_whole_floats_are_integers(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = scripted_agent([{"text": "x"}], max_steps=3.0, max_tokens=100.0)
            created = await http.post("/agents", json=body)
            assert created.status_code == 201, created.text
            assert created.json()["max_steps"] == 3 and created.json()["max_tokens"] == 100
            body = scripted_agent([{"text": "x"}], name="b", max_steps=3.5)
            assert (await http.post("/agents", json=body)).status_code == 400
            session = await http.post(
                "/sessions", json={"ttl_seconds": 60.0, "metadata": {"v": 1.0}}
            )
            assert session.json()["ttl_seconds"] == 60 and session.json()["metadata"] == {"v": 1.0}

    run(go())


def test_cors_for_browser_pages_when_configured(tmp_path: Path) -> None:
    async def go() -> None:
        settings = make_settings(tmp_path, cors_origins=["http://app.test"])
        async with app_client(settings) as http:
            origin = {"Origin": "http://app.test"}
            preflight = await http.options(
                "/sessions", headers={**origin, "Access-Control-Request-Method": "POST"}
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "http://app.test"
            listed = await http.get("/sessions", headers=origin)
            assert listed.headers["access-control-allow-origin"] == "http://app.test"
            exposed = listed.headers["access-control-expose-headers"].lower().split(", ")
            assert "sessiond-run-id" in exposed  # a page reads the run id of its stream
            other = await http.get("/sessions", headers={"Origin": "http://evil.test"})
            assert "access-control-allow-origin" not in other.headers
        async with app_client(make_settings(tmp_path)) as http:
            plain = await http.get("/sessions", headers={"Origin": "http://app.test"})
            assert "access-control-allow-origin" not in plain.headers

    run(go())
