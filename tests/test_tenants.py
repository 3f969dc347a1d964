"""Tenants: a key sees only what its tenant's keys made. Another tenant's agent, session, run,
message or key is 404 with the body a truly unknown id gets, on every route of openapi.yaml;
lists, search, names, the session channel, continue, fork, export and import stay within the
tenant; the built-in agent is everyone's; and a database from before tenants keeps its data
in the tenant `default`."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest

from server.api.keys import issue
from server.cli import main
from server.store import SqliteStore
from server.store.sqlite import SCHEMA_PATH, schema_steps
from tests.conftest import AppClient, app_client, make_settings
from tests.pg import sqlite_only
from tests.spec import Spec, load_spec, operations
from tests.test_auth import bearer
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

UNKNOWN = "01JZZZZZZZZZZZZZZZZZZZZZZZ"  # a well-formed id nobody has
MARKER = "quokkamarker"
# A valid body for each operation that takes one, so that only the lookup can refuse it.
BODIES: dict[tuple[str, str], Any] = {
    ("/agents/{agent_id}", "put"): {"system": "changed by another tenant"},
    ("/sessions/{session_id}", "put"): {"title": "changed by another tenant"},
    ("/sessions/{session_id}", "patch"): {"title": "changed by another tenant"},
    ("/sessions/{session_id}/message", "post"): {"message": "hi"},
    ("/sessions/{session_id}/message/stream", "post"): {"message": "hi"},
    ("/sessions/{session_id}/runs", "post"): {"message": "hi"},
    ("/sessions/{session_id}/runs/{run_id}/tool_results", "post"): {
        "results": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]
    },
    ("/sessions/{session_id}/fork", "post"): {},
}


class Tenant:
    def __init__(self, client: AppClient, key: str) -> None:
        self.client = client
        self.headers = bearer(key)

    async def call(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        headers = {**self.headers, **(headers or {})}
        return await self.client.request(method, url, headers=headers, **kwargs)

    async def ok(self, method: str, url: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await self.call(method, url, **kwargs)
        assert answer.status_code == status, (method, url, answer.text)
        return answer.json() if answer.content else None


async def two_tenants(client: AppClient) -> tuple[Tenant, Tenant]:
    keys = client.app.state.store.keys
    a = Tenant(client, (await issue(keys, "a", "admin", "acme")).key)
    b = Tenant(client, (await issue(keys, "b", "admin", "globex")).key)

    async def on() -> bool:
        return (await client.get("/sessions")).status_code == 401

    await until(on, "auth to turn on")
    return a, b


async def populate(a: Tenant) -> dict[str, str]:
    """Tenant A's things: an agent, a named session with a turn, its run and a message."""
    agent = await a.ok("POST", "/agents", 201, json={"name": "helper", "provider": "echo"})
    session = await a.ok("POST", "/sessions", 201, json={"name": "demo", "agent_id": agent["id"]})
    turn = await a.ok("POST", f"/sessions/{session['id']}/message", json={"message": MARKER})
    messages = await a.ok("GET", f"/sessions/{session['id']}/messages")
    key = await a.ok("POST", "/keys", 201, json={"name": "more"})
    return {
        "agent_id": agent["id"],
        "session_id": session["id"],
        "run_id": turn["run_id"],
        "response_id": turn["run_id"],  # a run is a response of /v1/responses
        "message_id": messages["data"][0]["id"],
        "key_id": key["id"],
    }


def fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: ids[m.group(1)], path)


def test_every_route_answers_another_tenants_ids_as_unknown(tmp_path: Path) -> None:
    spec = Spec()
    keyed = sorted(
        (path, method)
        for path, method in operations(load_spec())
        if "{" in path and not path.startswith("/console/")  # files, of no tenant
    )
    assert len(keyed) >= 20  # the table covers the routes, not a sample

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            a, b = await two_tenants(client)
            ids = await populate(a)
            unknown = dict.fromkeys(ids, UNKNOWN)
            before = await a.ok("GET", f"/sessions/{ids['session_id']}")
            for path, method in keyed:
                body = BODIES.get((path, method))
                kwargs = {} if body is None else {"json": body}
                theirs = await b.call(method, fill(path, ids), **kwargs)
                nobody = await b.call(method, fill(path, unknown), **kwargs)
                assert theirs.status_code == 404, (method, path, theirs.text)
                assert nobody.status_code == 404, (method, path, nobody.text)
                spec.check(theirs, path)
                mine, none = theirs.json(), _replace(nobody.json(), UNKNOWN, "<?>")
                for name, value in ids.items():
                    mine = _replace(mine, value, f"<{name}>")
                assert _shape(mine) == _shape(none), (method, path, theirs.text, nobody.text)
                assert theirs.headers.get("www-authenticate") is None
            # nothing of A's moved
            after = await a.ok("GET", f"/sessions/{ids['session_id']}")
            assert after == before
            assert (await a.ok("GET", f"/agents/{ids['agent_id']}"))["system"] is None
            assert len((await a.ok("GET", "/keys"))["data"]) == 2

    asyncio.run(go())


def _replace(body: Any, value: str, mark: str) -> Any:
    if isinstance(body, dict):
        return {k: _replace(v, value, mark) for k, v in body.items()}
    if isinstance(body, str):
        return body.replace(value, mark)
    return body


def _shape(body: Any) -> Any:
    """The body with every id placeholder alike: `<session_id>` and `<?>` say the same."""
    if isinstance(body, dict):
        return {k: _shape(v) for k, v in body.items()}
    if isinstance(body, str):
        return re.sub(r"<[a-z_?]+>", "<ID>", body)
    return body


def test_lists_search_names_and_channels_stay_within_the_tenant(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            a, b = await two_tenants(client)
            ids = await populate(a)
            assert (await b.ok("GET", "/sessions"))["data"] == []
            assert (await b.ok("GET", f"/sessions/search?q={MARKER}"))["data"] == []
            assert len((await a.ok("GET", f"/sessions/search?q={MARKER}"))["data"]) == 1
            agents = [x["id"] for x in (await b.ok("GET", "/agents"))["data"]]
            assert agents == ["default"]  # the built-in is everyone's; A's helper is not B's
            assert [k["name"] for k in (await b.ok("GET", "/keys"))["data"]] == ["b"]
            filtered = await b.ok("GET", f"/sessions?agent_id={ids['agent_id']}")
            assert filtered["data"] == []
            # the same names in both tenants, each its own
            theirs = await b.ok("POST", "/agents", 201, json={"name": "helper", "provider": "echo"})
            assert theirs["id"] != ids["agent_id"]
            demo = await b.ok("POST", "/sessions", 201, json={"name": "demo"})
            assert demo["id"] != ids["session_id"]
            assert (await a.ok("GET", "/sessions/demo"))["id"] == ids["session_id"]
            assert (await b.ok("GET", "/sessions/demo"))["id"] == demo["id"]
            resumed = await b.ok(
                "POST", "/sessions", 200, json={"name": "demo", "if_exists": "resume"}
            )
            assert resumed["id"] == demo["id"]
            # a session of B cannot take A's agent; a run of B cannot name it either
            moved = await b.call("PATCH", f"/sessions/{demo['id']}", json=ids)
            assert moved.status_code in (400, 404)
            taken = await b.call(
                "PATCH", f"/sessions/{demo['id']}", json={"agent_id": ids["agent_id"]}
            )
            assert taken.status_code == 404, taken.text
            run = await b.call(
                "POST",
                f"/sessions/{demo['id']}/message",
                json={"message": "hi", "agent_id": ids["agent_id"]},
            )
            assert run.status_code == 404, run.text
            # continue picks B's latest session, never A's
            await b.ok("POST", f"/sessions/{demo['id']}/message", json={"message": "b's turn"})
            cont = await b.ok("POST", "/run", json={"prompt": "again", "continue": True})
            assert cont["session_id"] == demo["id"]
            # the built-in agent is B's to use, not to change
            assert (await b.ok("GET", "/agents/default"))["id"] == "default"
            change = await b.call("PUT", "/agents/default", json={"system": "mine"})
            assert change.status_code == 403, change.text
            # export of A's id from B: not found; B's export holds only B's
            refused = await b.call("POST", "/sessions/export", json={"ids": [ids["session_id"]]})
            assert refused.status_code == 404
            bundle = await b.call("POST", "/sessions/export", json={})
            assert bundle.status_code == 200
            with zipfile.ZipFile(io.BytesIO(bundle.content)) as zipped:
                text = b"".join(zipped.read(n) for n in zipped.namelist()).decode()
            assert demo["id"] in text and ids["session_id"] not in text and MARKER not in text

    asyncio.run(go())


def test_import_lands_in_the_importers_tenant(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            a, b = await two_tenants(client)
            ids = await populate(a)
            exported = await a.call("GET", f"/sessions/{ids['session_id']}/export?with_agents=true")
            assert exported.status_code == 200
            # B imports A's export with its ids: the agent id is A's, so B's copy gets its own
            imported = await b.ok(
                "POST",
                "/sessions/import",
                201,
                content=exported.content,
                headers={"content-type": "application/json"},
            )
            session = imported["sessions"][0]
            assert session["id"] != ids["session_id"]
            assert session["agent_id"] != ids["agent_id"]
            assert (await b.ok("GET", f"/agents/{session['agent_id']}"))["name"] == "helper"
            assert [s["id"] for s in (await b.ok("GET", "/sessions"))["data"]] == [session["id"]]
            assert len((await a.ok("GET", "/sessions"))["data"]) == 1
            hits = await b.ok("GET", f"/sessions/search?q={MARKER}")
            assert [h["session"]["id"] for h in hits["data"]] == [session["id"]]

    asyncio.run(go())


def test_idempotency_keys_are_each_tenants_own(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            a, b = await two_tenants(client)
            first = await a.ok("POST", "/sessions", 201, json={})
            second = await b.ok("POST", "/sessions", 201, json={})
            same = {"idempotency-key": "job-1"}
            ran_a = await client.post(
                f"/sessions/{first['id']}/message",
                json={"message": "hi"},
                headers={**a.headers, **same},
            )
            ran_b = await client.post(
                f"/sessions/{second['id']}/message",
                json={"message": "hi"},
                headers={**b.headers, **same},
            )
            assert ran_a.status_code == ran_b.status_code == 200, (ran_a.text, ran_b.text)
            assert ran_a.json()["run_id"] != ran_b.json()["run_id"]
            again = await client.post(
                f"/sessions/{first['id']}/message",
                json={"message": "hi"},
                headers={**a.headers, **same},
            )
            assert again.json()["run_id"] == ran_a.json()["run_id"]

    asyncio.run(go())


@sqlite_only
def test_a_database_from_before_tenants_keeps_everything_in_default(tmp_path: Path) -> None:
    """Made at schema step 7 with a named session, a turn and an idempotency key; opened by
    this server, it holds all of it in the tenant `default`, and a default key sees it."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys=ON")
    for number, sql in schema_steps(SCHEMA_PATH.read_text())[:7]:
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    stamp = "2026-12-01T00:00:00.000Z"
    conn.execute(
        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
        "VALUES ('a1', 'old-agent', 'echo', ?, ?)",
        (stamp, stamp),
    )
    conn.execute(
        "INSERT INTO sessions (id, name, agent_id, message_count, last_seq, created_at, "
        "updated_at) VALUES ('s1', 'kept', 'a1', 1, 1, ?, ?)",
        (stamp, stamp),
    )
    conn.execute(
        "INSERT INTO runs (id, session_id, agent_id, status, input, idempotency_key, "
        "created_at) VALUES ('r1', 's1', 'a1', 'completed', '[]', 'k1', ?)",
        (stamp,),
    )
    conn.execute(
        "INSERT INTO messages (id, session_id, seq, role, content, run_id, created_at) "
        "VALUES ('m1', 's1', 1, 'user', ?, 'r1', ?)",
        ('[{"type":"text","text":"' + MARKER + '"}]', stamp),
    )
    conn.execute(
        "INSERT INTO message_search (rowid, text, session_id) "
        "SELECT rowid, ?, session_id FROM messages WHERE id = 'm1'",
        (MARKER,),
    )
    conn.commit()
    conn.close()

    async def go() -> None:
        store = SqliteStore(str(db))
        await store.open()
        try:
            record = await store.sessions.get("kept", "default")
            assert record.id == "s1" and record.message_count == 1
            assert await store.sessions.find_by_name("kept", "other") is None
            assert (await store.agents.get("a1", "default")).name == "old-agent"
            assert [m.id for m in await store.messages.history("s1")] == ["m1"]
            stored = await store.runs.by_idempotency_key("default:k1")
            assert stored is not None and stored.run.id == "r1"
            hits = await store.search.page("default", MARKER, 10, None)
            assert [h.session.id for h in hits.data] == ["s1"]
            assert (await store.search.page("other", MARKER, 10, None)).data == []
        finally:
            await store.close()
        check = sqlite3.connect(db)
        assert check.execute("PRAGMA foreign_key_check").fetchall() == []
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # the cascade still holds on the tables made again
        check.execute("PRAGMA foreign_keys=ON")
        check.execute("DELETE FROM sessions WHERE id = 's1'")
        assert check.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert check.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        check.close()

    asyncio.run(go())


@pytest.mark.parametrize("bad", ["", "a:b", "-x", "x" * 65, "sp ace"])
def test_a_tenant_name_is_checked(tmp_path: Path, bad: str) -> None:
    db = str(tmp_path / "k.db")
    code = main(["keys", "create", "--name", "x", f"--tenant={bad}", "--db", db])
    assert code != 0


def test_keys_cli_makes_and_lists_keys_of_a_tenant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "k.db")
    assert main(["keys", "create", "--name", "one", "--tenant", "acme", "--db", db]) == 0
    assert main(["keys", "create", "--name", "two", "--db", db]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--tenant", "acme", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "one" in listed and "acme" in listed and "two" not in listed
