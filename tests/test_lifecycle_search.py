"""GET /sessions/search: FTS5 over message text, kept in step by the write path; results are
sessions with highlighted snippets, best first, paginated (in-process app)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from server.models import TextBlock
from server.store import SqliteStore, messages
from server.store.sqlite import SCHEMA_PATH, _migrate, schema_steps
from tests.conftest import app_client, make_settings, scripted_agent
from tests.pg import sqlite_only

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def chat(http: Any, tmp_path: Path, script: list[Any], *prompts: str, **session: Any) -> str:
    body = scripted_agent(script, name=f"a{time.monotonic_ns()}", tools=["list_files"])
    agent = (await http.post("/agents", json=body)).json()["id"]
    created = await http.post(
        "/sessions", json={"agent_id": agent, "work_dir": str(tmp_path), **session}
    )
    sid = str(created.json()["id"])
    for prompt in prompts:
        sent = await http.post(f"/sessions/{sid}/message", json={"message": prompt})
        assert sent.status_code == 200, sent.text
    return sid


async def search(http: Any, q: str, **params: Any) -> dict[str, Any]:
    response = await http.get("/sessions/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return dict(response.json())


def marked(snippet: dict[str, Any]) -> list[str]:
    return [snippet["text"][start:end] for start, end in snippet["highlights"]]


def test_finds_words_from_a_reply_and_from_a_tool_result(tmp_path: Path) -> None:
    (tmp_path / "zebrafish_notes.txt").write_text("x")
    script = [
        {"text": "Let me look.", "tool_calls": [{"name": "list_files", "input": {}}]},
        {"text": "The folder holds a single notebook about aquariums."},
    ]

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await chat(http, tmp_path, script, "what is here?")
            other = await chat(http, tmp_path, [{"text": "nothing relevant"}], "hello")

            reply = await search(http, "aquariums")
            [hit] = reply["data"]
            assert hit["session"]["id"] == sid and hit["score"] > 0
            [snippet] = hit["snippets"]
            assert snippet["role"] == "assistant" and snippet["seq"] == 4
            assert marked(snippet) == ["aquariums"]

            tool = await search(http, "zebrafish")
            [hit] = tool["data"]
            assert hit["session"]["id"] == sid
            assert hit["snippets"][0]["role"] == "user" and hit["snippets"][0]["seq"] == 3
            assert marked(hit["snippets"][0]) == ["zebrafish"]

            prefix = await search(http, "aquar*")
            assert [h["session"]["id"] for h in prefix["data"]] == [sid]
            both = await search(http, "relevant nothing")
            assert [h["session"]["id"] for h in both["data"]] == [other]
            # every word must be in one message
            assert (await search(http, "hello nothing"))["data"] == []
            assert (await search(http, "list_files"))["data"][0]["session"]["id"] == sid

    run(go())


def test_best_first_and_paginated(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            weak = await chat(
                http, tmp_path, [{"text": "a quokka among many many other words here"}], "x"
            )
            strong = await chat(http, tmp_path, [{"text": "quokka quokka quokka"}], "quokka")
            both = await search(http, "quokka")
            assert [h["session"]["id"] for h in both["data"]] == [strong, weak]
            assert both["data"][0]["score"] > both["data"][1]["score"]
            assert len(both["data"][0]["snippets"]) == 2
            assert both["next_cursor"] is None
            first = await search(http, "quokka", limit=1)
            assert [h["session"]["id"] for h in first["data"]] == [strong]
            second = await search(http, "quokka", limit=1, cursor=first["next_cursor"])
            assert [h["session"]["id"] for h in second["data"]] == [weak]
            assert second["next_cursor"] is None

    run(go())


def test_index_follows_deletes_forks_and_archives(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = await chat(http, tmp_path, [{"text": "the wombat sleeps"}], "hi")
            fork = (await http.post(f"/sessions/{sid}/fork", json={})).json()["id"]
            found = {h["session"]["id"] for h in (await search(http, "wombat"))["data"]}
            assert found == {sid, fork}
            await http.post(f"/sessions/{fork}/archive")
            hits = (await search(http, "wombat"))["data"]
            archived = [h for h in hits if h["session"]["id"] == fork]
            assert archived[0]["session"]["status"] == "archived"
            await http.delete(f"/sessions/{sid}")
            await http.delete(f"/sessions/{fork}")
            assert (await search(http, "wombat"))["data"] == []

    run(go())


ODD_QUERIES = [
    '"',
    '"unbalanced',
    "AND",
    "OR NOT",
    "NEAR(a b",
    "*",
    "**",
    "a*b*",
    "-x",
    "col:wombat",
    "{x}",
    "^start",
    "(a OR b)",
    "\u00e9t\u00e9",
    "\U0001f600",
    "x" * 1000,
    "\x00",
    "a\x00b",
]


@pytest.mark.parametrize("q", ODD_QUERIES)
def test_any_query_is_an_answer_not_an_error(tmp_path: Path, q: str) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            await chat(http, tmp_path, [{"text": "ete and summer"}], "hi")
            response = await http.get("/sessions/search", params={"q": q})
            assert response.status_code == 200, response.text
            assert set(response.json()) == {"data", "next_cursor"}

    run(go())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 1001}, "q"),
        ({"q": "x", "limit": "0"}, "limit"),
        ({"q": "x", "cursor": "nope"}, "cursor"),
        ({"q": "x", "cursor": "WyJhIiwxXQ"}, "cursor"),
    ],
)
def test_bad_search_requests_are_400(tmp_path: Path, params: dict[str, str], field: str) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            response = await http.get("/sessions/search", params=params)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["field"] == field

    run(go())


@sqlite_only
def test_upgrading_a_database_indexes_its_existing_messages(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    step_one = schema_steps(SCHEMA_PATH.read_text())[:1]
    _migrate(conn, step_one)  # a database from before full-text search
    stamp = "2026-01-01T00:00:00.000Z"
    conn.execute(
        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
        "VALUES ('default', 'default', 'echo', ?, ?)",
        (stamp, stamp),
    )
    conn.execute(
        "INSERT INTO sessions (id, agent_id, last_seq, message_count, created_at, updated_at) "
        "VALUES ('01J00000000000000000000001', 'default', 1, 1, ?, ?)",
        (stamp, stamp),
    )
    content = '[{"type":"text","text":"an old platypus"}]'
    conn.execute(
        "INSERT INTO messages (id, session_id, seq, role, content, created_at) "
        "VALUES ('01J00000000000000000000002', '01J00000000000000000000001', 1, 'user', ?, ?)",
        (content, stamp),
    )
    conn.close()

    async def go() -> None:
        async with app_client(make_settings(tmp_path, db=str(db))) as http:
            [hit] = (await search(http, "platypus"))["data"]
            assert hit["session"]["id"] == "01J00000000000000000000001"

    run(go())


# What schema step 2's trigger indexed for a message; the writer now indexes new messages
# itself (store/searchindex.py) and must index exactly this.
STEP_2_TEXT = """
SELECT messages.rowid, group_concat(
    CASE json_extract(value, '$.type')
        WHEN 'text' THEN json_extract(value, '$.text')
        WHEN 'tool_result' THEN json_extract(value, '$.content')
        WHEN 'tool_use' THEN json_extract(value, '$.name') || ' ' || json_extract(value, '$.input')
    END, char(10))
FROM messages, json_each(messages.content)
GROUP BY messages.rowid ORDER BY messages.rowid
"""


@sqlite_only
def test_every_write_path_indexes_the_text_the_step_2_trigger_did(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    script = [
        {"tool_calls": [{"name": "list_files", "input": {"path": ".", "glob": "é*"}}]},
        {"text": "the quokka smiles\nand waves"},
    ]

    async def go() -> None:
        async with app_client(settings) as http:
            sid = await chat(http, tmp_path, script, "hello", "again")  # append
            await http.post(f"/sessions/{sid}/fork", json={})  # copied messages
            doc = (await http.get(f"/sessions/{sid}/export")).json()
            imported = await http.post("/sessions/import", json=doc)  # imported messages
            assert imported.status_code == 201, imported.text
            gone = await chat(http, tmp_path, script, "to be deleted")
            assert (await http.delete(f"/sessions/{gone}")).status_code == 204
            assert len((await search(http, "quokka"))["data"]) == 3

    run(go())
    conn = sqlite3.connect(settings.db)
    try:
        expected = conn.execute(STEP_2_TEXT).fetchall()
        indexed = conn.execute("SELECT rowid, text FROM message_search ORDER BY rowid").fetchall()
        assert len(expected) == 4 * 3 * 2  # 4 messages a turn, 2 turns, 3 sessions
        assert indexed == expected
    finally:
        conn.close()


@sqlite_only
def test_a_failing_write_leaves_nothing_in_the_index(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with app_client(settings) as http:
            sid = await chat(http, tmp_path, [{"text": "x"}], "first")
        store = SqliteStore(settings.db)
        await store.open()
        try:

            def fails(conn: sqlite3.Connection) -> None:
                messages.append(conn, sid, "user", [TextBlock("a lost narwhal")], None, "t")
                raise RuntimeError("after the insert")

            def works(conn: sqlite3.Connection) -> None:
                messages.append(conn, sid, "user", [TextBlock("a kept narwhal")], None, "t")

            failed, kept = store.db.submit(fails), store.db.submit(works)  # one commit
            with pytest.raises(RuntimeError):
                await failed
            await kept
        finally:
            await store.close()

    run(go())
    conn = sqlite3.connect(settings.db)
    try:
        found = conn.execute(
            "SELECT text FROM message_search WHERE message_search MATCH 'narwhal'"
        ).fetchall()
        assert found == [("a kept narwhal",)]
    finally:
        conn.close()
