"""Runs and their event log. The write operations here are the runner's, one per moment of a
run's life (start, step, finish), each a single transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from server.errors import NotFound
from server.models import (
    ContentBlock,
    ErrorInfo,
    Message,
    Page,
    PendingToolCall,
    Role,
    Run,
    ToolCallRecord,
    ToolResultBlock,
    Usage,
)
from server.store import codec, messages
from server.store.pages import decode_cursor, encode_cursor
from server.store.sessions import TOUCH_EXPIRY
from server.store.sqlite import Database

_COLUMNS = (
    "id, session_id, agent_id, status, steps, input_tokens, output_tokens, stop_reason, error, "
    "tool_calls, pending_tool_calls, created_at, started_at, finished_at"
)


class NewRun(msgspec.Struct):
    id: str
    session_id: str
    agent_id: str
    status: str  # running | queued
    input: list[ContentBlock]
    options: dict[str, Any]
    idempotency_key: str | None
    created_at: str


class StoredRun(msgspec.Struct):
    """A run with what the runner needs to start or resume it."""

    run: Run
    input: list[ContentBlock]
    options: dict[str, Any]
    held: list[ToolResultBlock]  # server tool results of a step paused for client tools


def _stored(row: Any) -> StoredRun:
    return StoredRun(
        _run(row),
        codec.decode_content(row["input"]),
        codec.decode_object(row["options"]),
        codec.decode_results(row["held_results"]),
    )


def _run(row: Any) -> Run:
    error = row["error"]
    return Run(
        id=row["id"],
        session_id=row["session_id"],
        agent_id=row["agent_id"],
        status=row["status"],
        steps=row["steps"],
        usage=Usage(row["input_tokens"], row["output_tokens"]),
        stop_reason=row["stop_reason"],
        error=codec.decode_error(error) if error else None,
        tool_calls=codec.decode_tool_calls(row["tool_calls"]),
        pending_tool_calls=codec.decode_pending(row["pending_tool_calls"]),
        queue_position=None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _touch_session(conn: sqlite3.Connection, session_id: str, status: str | None, now: str) -> None:
    conn.execute(
        f"UPDATE sessions SET status = coalesce(?, status), updated_at = ?, {TOUCH_EXPIRY} "
        "WHERE id = ?",
        (status, now, now, session_id),
    )


def _add_usage(conn: sqlite3.Connection, run_id: str, session_id: str, usage: Usage) -> None:
    if usage.input_tokens == 0 and usage.output_tokens == 0:
        return
    for table, key in (("runs", run_id), ("sessions", session_id)):
        conn.execute(
            f"UPDATE {table} SET input_tokens = input_tokens + ?, "
            "output_tokens = output_tokens + ? WHERE id = ?",
            (usage.input_tokens, usage.output_tokens, key),
        )


def start(conn: sqlite3.Connection, new: NewRun) -> Message | None:
    """Open a run; a running one also stores its user message and marks the session busy."""
    conn.execute(
        "INSERT INTO runs (id, session_id, agent_id, status, input, options, idempotency_key, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.session_id,
            new.agent_id,
            new.status,
            codec.text(new.input),
            codec.text(new.options),
            new.idempotency_key,
            new.created_at,
        ),
    )
    if new.status == "queued":
        return None
    return begin(conn, new.id, new.session_id, new.input, new.created_at)


def begin(
    conn: sqlite3.Connection, run_id: str, session_id: str, content: list[ContentBlock], now: str
) -> Message:
    conn.execute("UPDATE runs SET status = 'running', started_at = ? WHERE id = ?", (now, run_id))
    conn.execute("UPDATE sessions SET turn_count = turn_count + 1 WHERE id = ?", (session_id,))
    _touch_session(conn, session_id, "running", now)
    return messages.append(conn, session_id, "user", content, run_id, now)


def add_step(
    conn: sqlite3.Connection,
    run_id: str,
    session_id: str,
    entries: list[tuple[Role, list[ContentBlock]]],
    usage: Usage,
    tool_calls: list[ToolCallRecord],
    now: str,
    held: list[ToolResultBlock] | None = None,
) -> list[Message]:
    """Persist a completed step: its messages, counters and usage, in one transaction. A step
    paused for client tools keeps its server tools' results in `held` until the rest come."""
    stored = [
        messages.append(conn, session_id, role, blocks, run_id, now) for role, blocks in entries
    ]
    conn.execute(
        "UPDATE runs SET steps = steps + 1, held_results = ? WHERE id = ?",
        (codec.text(held or []), run_id),
    )
    conn.executemany(
        "UPDATE runs SET tool_calls = json_insert(tool_calls, '$[#]', json(?)) WHERE id = ?",
        [(codec.text(call), run_id) for call in tool_calls],
    )
    _add_usage(conn, run_id, session_id, usage)
    _touch_session(conn, session_id, None, now)
    return stored


class Finish(msgspec.Struct):
    status: str
    stop_reason: str | None
    error: ErrorInfo | None
    usage: Usage
    pending: list[PendingToolCall]
    session_status: str | None  # None: leave the session's status alone


def finish(conn: sqlite3.Connection, run_id: str, session_id: str, end: Finish, now: str) -> None:
    finished_at = None if end.status == "requires_action" else now
    conn.execute(
        "UPDATE runs SET status = ?, stop_reason = ?, error = ?, pending_tool_calls = ?, "
        "finished_at = ? WHERE id = ?",
        (
            end.status,
            end.stop_reason,
            codec.text(end.error) if end.error else None,
            codec.text(end.pending),
            finished_at,
            run_id,
        ),
    )
    _add_usage(conn, run_id, session_id, end.usage)
    _touch_session(conn, session_id, end.session_status, now)


def add_usage(conn: sqlite3.Connection, run_id: str, session_id: str, usage: Usage) -> None:
    _add_usage(conn, run_id, session_id, usage)


def resume(
    conn: sqlite3.Connection,
    run_id: str,
    session_id: str,
    results: list[ContentBlock],
    now: str,
) -> Message:
    """A paused run gets its tool results: store them as the next user turn and run again."""
    conn.execute(
        "UPDATE runs SET status = 'running', pending_tool_calls = '[]', held_results = '[]' "
        "WHERE id = ?",
        (run_id,),
    )
    _touch_session(conn, session_id, "running", now)
    return messages.append(conn, session_id, "user", results, run_id, now)


class Runs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, run_id: str, session_id: str | None = None) -> StoredRun:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, input, options, held_results FROM runs WHERE id = ?", (run_id,)
        )
        if row is None or (session_id is not None and row["session_id"] != session_id):
            raise NotFound(f"run {run_id!r} not found")
        return _stored(row)

    async def by_idempotency_key(self, key: str) -> Run | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM runs WHERE idempotency_key = ?", (key,)
        )
        return _run(row) if row is not None else None

    async def page(self, session_id: str, limit: int, cursor: str | None) -> Page[Run]:
        before = str(decode_cursor(cursor, 1)[0]) if cursor else "~"
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM runs WHERE session_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (session_id, before, limit + 1),
        )
        data = [_run(row) for row in rows[:limit]]
        more = len(rows) > limit and data
        return Page(data, encode_cursor(data[-1].id) if more else None)

    async def unfinished(self) -> list[StoredRun]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS}, input, options, held_results FROM runs "
            "WHERE status IN ('queued', 'running', 'requires_action') ORDER BY id"
        )
        return [_stored(row) for row in rows]

    async def events(self, run_id: str, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        rows = await self.db.fetchall(
            "SELECT seq, type, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after, limit),
        )
        return [(row[0], row[1], bytes(row[2])) for row in rows]

    async def of_session(self, session_id: str) -> list[Run]:
        """Every run of a session, oldest first (for exports)."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM runs WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [_run(row) for row in rows]

    async def paused(self, session_id: str) -> StoredRun | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, input, options, held_results FROM runs "
            "WHERE session_id = ? AND status = 'requires_action' ORDER BY id DESC LIMIT 1",
            (session_id,),
        )
        return _stored(row) if row is not None else None

    async def ids_from(self, session_id: str, run_id: str) -> list[str]:
        """The session's run ids from `run_id` on, oldest first."""
        rows = await self.db.fetchall(
            "SELECT id FROM runs WHERE session_id = ? AND id >= ? ORDER BY id", (session_id, run_id)
        )
        return [row[0] for row in rows]

    async def last_event_seq(self, run_id: str) -> int:
        row = await self.db.fetchone("SELECT max(seq) FROM events WHERE run_id = ?", (run_id,))
        return int(row[0] or 0)
