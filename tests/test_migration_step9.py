"""Schema step 9 (token counts, compaction, webhooks) on a database made by step 8 with data
in it: every row is kept (messages with their rowids, so search still finds them; agents,
sessions, runs), old messages get estimated counts, the new columns their defaults, and the
upgraded database runs, searches and deletes as before."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from server.store.sqlite import SCHEMA_PATH, _migrate, schema_steps
from tests.conftest import app_client, make_settings

STAMP = "2026-01-01T00:00:00.000Z"
SID = "01J00000000000000000000001"


def old_database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    steps = schema_steps(SCHEMA_PATH.read_text())
    assert len(steps) >= 9
    _migrate(conn, steps[:8])
    conn.execute(
        "INSERT INTO agents (id, name, provider, options, created_at, updated_at) VALUES "
        "('01J0000000000000000000000A', 'old', 'scripted', "
        '\'{"script": [{"text": "fresh answer"}]}\', ?, ?)',
        (STAMP, STAMP),
    )
    conn.execute(
        "INSERT INTO sessions (id, agent_id, last_seq, message_count, turn_count, created_at, "
        "updated_at) VALUES (?, '01J0000000000000000000000A', 2, 2, 1, ?, ?)",
        (SID, STAMP, STAMP),
    )
    conn.execute(
        "INSERT INTO runs (id, session_id, agent_id, status, input, created_at) VALUES "
        "('01J0000000000000000000000R', ?, '01J0000000000000000000000A', 'completed', '[]', ?)",
        (SID, STAMP),
    )
    rows = [
        ("01J00000000000000000000002", 1, "user", "tell me about the platypus"),
        ("01J00000000000000000000003", 2, "assistant", "the platypus lays eggs"),
    ]
    for mid, seq, role, text in rows:
        content = '[{"type":"text","text":"' + text + '"}]'
        conn.execute(
            "INSERT INTO messages (id, session_id, seq, role, content, run_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, '01J0000000000000000000000R', ?)",
            (mid, SID, seq, role, content, STAMP),
        )
        conn.execute(
            "INSERT INTO message_search (rowid, text, session_id) "
            "SELECT rowid, ?, session_id FROM messages WHERE id = ?",
            (text, mid),
        )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
    conn.close()


def test_step_9_keeps_every_row(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_database(db)

    async def go() -> None:
        async with app_client(make_settings(tmp_path, db=str(db))) as http:
            listed = (await http.get(f"/sessions/{SID}/messages")).json()["data"]
            assert [m["seq"] for m in listed] == [1, 2]
            assert listed[0]["content"] == [{"type": "text", "text": "tell me about the platypus"}]
            for message in listed:
                assert message["tokens_source"] == "estimate"
                assert message["tokens"] >= 1
                assert message["compaction"] is None
            hits = (await http.get("/sessions/search", params={"q": "platypus"})).json()
            assert [h["session"]["id"] for h in hits["data"]] == [SID]
            agent = (await http.get("/agents/01J0000000000000000000000A")).json()
            assert (agent["context_window"], agent["compact_at"]) == (200_000, 160_000)
            assert agent["webhook_url"] is None and agent["summary_agent"] is None
            session = (await http.get(f"/sessions/{SID}")).json()
            assert (session["message_count"], session["webhook_url"]) == (2, None)
            run = (await http.get(f"/sessions/{SID}/runs/01J0000000000000000000000R")).json()
            assert run["status"] == "completed"
            # the upgraded session runs on, and its history still answers search and deletes
            reply = await http.post(f"/sessions/{SID}/message", json={"message": "more"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["response"] == "fresh answer"
            listed = (await http.get(f"/sessions/{SID}/messages")).json()["data"]
            assert [m["seq"] for m in listed] == [1, 2, 3, 4]
            assert listed[-1]["tokens_source"] == "provider"
            assert (await http.delete(f"/sessions/{SID}")).status_code == 204
            hits = (await http.get("/sessions/search", params={"q": "platypus"})).json()
            assert hits["data"] == []

    asyncio.run(go())
    conn = sqlite3.connect(db)
    try:
        steps = len(schema_steps(SCHEMA_PATH.read_text()))  # the later steps ran too
        assert conn.execute("PRAGMA user_version").fetchone()[0] == steps
        assert conn.execute("SELECT count(*) FROM message_search").fetchone()[0] == 0
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        triggers = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        assert triggers == {"message_search_delete", "message_search_update"}
    finally:
        conn.close()
