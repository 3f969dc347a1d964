"""Export and import: every run of a session at once, and imported sessions written whole (in
one transaction, so that an import that fails anywhere leaves nothing behind)."""

from __future__ import annotations

import sqlite3

from server.errors import Conflict
from server.models import Agent, Message, Run, SessionRecord
from server.store import agents as agent_ops
from server.store import codec, searchindex, sessions
from server.store import messages as stored_messages
from server.store.contract import Restorable
from server.store.sqlite import Database

_CHUNK = 500


class Transfer:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def restore(
        self, tenant: str, items: list[Restorable], agents: list[Agent] | None = None
    ) -> None:
        """Store the sessions, and first the `agents` they need that this server lacks."""
        await self.db.write(lambda conn: _restore(conn, tenant, items, agents or []))


def _restore(
    conn: sqlite3.Connection, tenant: str, items: list[Restorable], agents: list[Agent]
) -> None:
    for agent in agents:
        agent_ops.insert(conn, agent, tenant)
    ids = [record.id for record, _, _ in items]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        taken = conn.execute(f"SELECT id FROM sessions WHERE id IN ({marks})", chunk).fetchone()
        if taken is not None:
            raise Conflict(
                f"session {taken[0]} already exists; import without keep_ids to give the "
                "imported sessions new ids",
                field="keep_ids",
            )
    try:
        for item in items:
            _insert(conn, tenant, *item)
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"the import clashes with data already stored: {exc}") from exc


def _insert(
    conn: sqlite3.Connection,
    tenant: str,
    record: SessionRecord,
    messages: list[Message],
    runs: list[Run],
) -> None:
    sessions.insert(conn, record, tenant, last_seq=len(messages))
    if record.status == "failed":
        conn.execute("UPDATE sessions SET status = 'failed' WHERE id = ?", (record.id,))
    conn.executemany(
        "INSERT INTO runs (id, session_id, agent_id, status, input, steps, input_tokens, "
        "output_tokens, stop_reason, error, tool_calls, pending_tool_calls, created_at, "
        "started_at, finished_at) VALUES (?, ?, ?, ?, '[]', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run.id,
                run.session_id,
                run.agent_id,
                run.status,
                run.steps,
                run.usage.input_tokens,
                run.usage.output_tokens,
                run.stop_reason,
                codec.text(run.error) if run.error else None,
                codec.text(run.tool_calls),
                codec.text(run.pending_tool_calls),
                run.created_at,
                run.started_at,
                run.finished_at,
            )
            for run in runs
        ],
    )
    conn.executemany(
        "INSERT INTO messages (id, session_id, seq, role, content, run_id, created_at, tokens, "
        "tokens_source, compaction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [stored_messages.values(m) for m in messages],
    )
    searchindex.index(conn, [(m.id, m.content) for m in messages])
