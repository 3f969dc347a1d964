"""Session names: unique, usable wherever an id is, create-or-resume; editing with PUT and
PATCH; listing filters, order and cursor pagination under inserts (in-process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_client, make_settings, scripted_agent

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def scripted(http: Any, text: str = "ok", **extra: Any) -> str:
    body = scripted_agent([{"text": text}], name=f"agent-{text}", **extra)
    response = await http.post("/agents", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_every_session_route_takes_the_name(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await scripted(http)
            created = await http.post("/sessions", json={"name": "my.chat-1", "agent_id": agent})
            sid = created.json()["id"]
            sent = await http.post("/sessions/my.chat-1/message", json={"message": "hi"})
            assert sent.status_code == 200 and sent.json()["session_id"] == sid
            run_id = sent.json()["run_id"]
            reads = [
                "/sessions/my.chat-1",
                "/sessions/my.chat-1/messages",
                "/sessions/my.chat-1/runs",
                f"/sessions/my.chat-1/runs/{run_id}",
                "/sessions/my.chat-1/export",
            ]
            for path in reads:
                response = await http.get(path)
                assert response.status_code == 200, (path, response.text)
            assert (await http.get("/sessions/my.chat-1")).json()["id"] == sid
            for verb in ("archive", "unarchive"):
                done = await http.post(f"/sessions/my.chat-1/{verb}")
                assert done.status_code == 200 and done.json()["id"] == sid
            fork = await http.post("/sessions/my.chat-1/fork", json={})
            assert fork.status_code == 201 and fork.json()["parent_id"] == sid
            patched = await http.patch("/sessions/my.chat-1", json={"title": "t"})
            assert patched.json()["id"] == sid
            assert (await http.delete("/sessions/my.chat-1")).status_code == 204
            assert (await http.get(f"/sessions/{sid}")).status_code == 404

    run(go())


def test_create_or_resume_by_name(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            first = await http.post("/sessions", json={"name": "work", "title": "one"})
            assert first.status_code == 201
            clash = await http.post("/sessions", json={"name": "work"})
            assert clash.status_code == 409 and clash.json()["error"]["type"] == "conflict"
            body = {"name": "work", "if_exists": "resume", "title": "ignored"}
            again = await http.post("/sessions", json=body)
            assert again.status_code == 200 and again.json() == first.json()
            fresh = await http.post("/sessions", json={"name": "other", "if_exists": "resume"})
            assert fresh.status_code == 201
            listed = (await http.get("/sessions")).json()["data"]
            assert sorted(s["name"] for s in listed) == ["other", "work"]

    run(go())


def test_concurrent_create_or_resume_makes_one_session(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = {"name": "race", "if_exists": "resume"}
            answers = await asyncio.gather(*(http.post("/sessions", json=body) for _ in range(8)))
            assert sorted(a.status_code for a in answers).count(201) == 1
            assert {a.status_code for a in answers} <= {200, 201}
            assert len({a.json()["id"] for a in answers}) == 1

    run(go())


def test_put_and_patch_edit_title_tags_metadata(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = {"title": "a", "tags": ["x"], "metadata": {"k": 1}, "name": "n1"}
            sid = (await http.post("/sessions", json=body)).json()["id"]
            put = await http.put(f"/sessions/{sid}", json={"tags": ["y", "z"], "metadata": {}})
            assert put.status_code == 200
            assert (put.json()["tags"], put.json()["metadata"]) == (["y", "z"], {})
            assert put.json()["title"] == "a"
            patch = await http.patch(f"/sessions/{sid}", json={"title": None, "name": "n2"})
            got = patch.json()
            assert (got["title"], got["name"], got["tags"]) == (None, "n2", ["y", "z"])
            assert (await http.get("/sessions/n2")).json()["id"] == sid
            assert (await http.get("/sessions/n1")).status_code == 404
            ttl = (await http.patch(f"/sessions/{sid}", json={"ttl_seconds": 60})).json()
            assert ttl["ttl_seconds"] == 60 and ttl["expires_at"] > ttl["updated_at"]
            cleared = (await http.patch(f"/sessions/{sid}", json={"ttl_seconds": None})).json()
            assert cleared["expires_at"] is None

    run(go())


BAD_NAMES = ["", "has space", "x" * 101, "slash/name", "01J00000000000000000000000", "search"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            created = await http.post("/sessions", json={"name": name})
            assert created.status_code == 400, created.text
            assert created.json()["error"]["field"] == "name"
            sid = (await http.post("/sessions", json={})).json()["id"]
            renamed = await http.patch(f"/sessions/{sid}", json={"name": name})
            assert renamed.status_code == 400 and renamed.json()["error"]["field"] == "name"
            assert (await http.get("/sessions")).json()["data"][0]["name"] is None

    run(go())


def test_rename_to_a_taken_name_is_409_and_changes_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            await http.post("/sessions", json={"name": "taken"})
            sid = (await http.post("/sessions", json={"name": "mine", "title": "t"})).json()["id"]
            before = (await http.get(f"/sessions/{sid}")).json()
            clash = await http.put(f"/sessions/{sid}", json={"name": "taken", "title": "new"})
            assert clash.status_code == 409 and clash.json()["error"]["type"] == "conflict"
            assert (await http.get(f"/sessions/{sid}")).json() == before

    run(go())


def test_list_filters(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            agent = await scripted(http)
            (tmp_path / "w").mkdir()
            made = {
                "a": {"tags": ["red", "big"], "work_dir": str(tmp_path / "w")},
                "b": {"tags": ["red"], "agent_id": agent},
                "c": {"tags": ["big"]},
            }
            for name, body in made.items():
                assert (await http.post("/sessions", json={"name": name, **body})).is_success
            await http.post("/sessions/c/archive")

            async def names(query: str) -> list[str]:
                page = (await http.get(f"/sessions?{query}")).json()
                return sorted(s["name"] for s in page["data"])

            assert await names("") == ["a", "b"]
            assert await names("tag=red") == ["a", "b"]
            assert await names("tag=red&tag=big") == ["a"]
            assert await names(f"agent_id={agent}") == ["b"]
            assert await names(f"work_dir={(tmp_path / 'w').resolve()}") == ["a"]
            assert await names("name=b") == ["b"]
            assert await names("status=archived") == ["c"]
            assert await names("status=archived&tag=red") == []
            assert await names("status=idle") == ["a", "b"]
            bad = await http.get("/sessions?status=gone")
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "status"

    run(go())


def test_pagination_is_stable_under_inserts(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            for order in ("created_at", "updated_at"):
                ids = [(await http.post("/sessions", json={})).json()["id"] for _ in range(7)]
                seen: list[str] = []
                cursor = None
                while True:
                    params: dict[str, Any] = {"limit": 3, "order": order}
                    if cursor:
                        params["cursor"] = cursor
                    page = (await http.get("/sessions", params=params)).json()
                    seen += [s["id"] for s in page["data"]]
                    # new sessions arrive mid-listing: they sort before the cursor
                    await http.post("/sessions", json={})
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert len(seen) == len(set(seen))
                assert [i for i in seen if i in ids] == ids[::-1]
                for sid in [
                    s["id"] for s in (await http.get("/sessions?limit=1000")).json()["data"]
                ]:
                    await http.delete(f"/sessions/{sid}")

    run(go())
