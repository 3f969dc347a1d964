"""Runs: one write per moment of a run's life (start, begin, step, finish, resume, close),
each a single transaction, and the reads that find runs."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from server.errors import NotFound
from server.models import (
    ContentBlock,
    Message,
    Page,
    Run,
    SessionRecord,
    Usage,
    new_messages,
)
from server.store import codec, messages, webhooks
from server.store.contract import Begun, Finish, NewRun, Stale, Step, StoredRun
from server.store.pages import decode_cursor, encode_cursor
from server.store.sessions import TOUCH_EXPIRY
from server.store.sqlite import Database

_COLUMNS = (
    "id, session_id, agent_id, status, steps, input_tokens, output_tokens, stop_reason, error, "
    "tool_calls, pending_tool_calls, created_at, started_at, finished_at"
)


_AS_EXPECTED = (
    " AND archived_at IS NULL AND status <> 'requires_action' AND agent_id = ? "
    "AND work_dir IS ? AND name IS ?"
)


def _stored(row: Any) -> StoredRun:
    return StoredRun(
        _run(row),
        codec.decode_content(row["input"]),
        codec.decode_object(row["options"]),
        codec.decode_results(row["held_results"]),
        row["run_seconds"],
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


def _move_session(
    conn: sqlite3.Connection,
    session_id: str,
    now: str,
    *,
    added: int = 0,
    usage: Usage | None = None,
    status: str | None = None,
    turns: int = 0,
    expected: SessionRecord | None = None,
) -> tuple[int, int] | None:
    """All that a moment of a run changes on its session row, in one statement, since each
    statement costs the writer its own binding, B-tree walk and GIL hand-back (bench turns):
    `added` messages numbered on from last_seq, usage, turns, status (None: unchanged) and
    activity. Returns the new (last_seq, message_count), or None if there is no such
    session (as `expected`, if given)."""
    usage = usage or Usage()
    params: tuple[Any, ...] = (
        added,
        added,
        turns,
        usage.input_tokens,
        usage.output_tokens,
        status,
        now,
        now,
        session_id,
    )
    where = "id = ?"
    if expected is not None:
        where += _AS_EXPECTED
        params += (expected.agent_id, expected.work_dir, expected.name)
    row: tuple[int, int] | None = conn.execute(
        "UPDATE sessions SET last_seq = last_seq + ?, message_count = message_count + ?, "
        "turn_count = turn_count + ?, input_tokens = input_tokens + ?, "
        "output_tokens = output_tokens + ?, status = coalesce(?, status), updated_at = ?, "
        f"{TOUCH_EXPIRY} WHERE {where} RETURNING last_seq, message_count",
        params,
    ).fetchone()
    return row


def start(conn: sqlite3.Connection, new: NewRun) -> Begun | None:
    """Open a run; a running one also stores its user message and marks the session busy."""
    running = new.status == "running"
    conn.execute(
        "INSERT INTO runs (id, session_id, agent_id, status, input, options, idempotency_key, "
        "created_at, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.session_id,
            new.agent_id,
            new.status,
            codec.text(new.input),
            codec.text(new.options),
            new.idempotency_key,
            new.created_at,
            new.created_at if running else None,
        ),
    )
    if not running:
        expected = new.expected
        if (
            expected is not None
            and not conn.execute(
                f"SELECT 1 FROM sessions WHERE id = ?{_AS_EXPECTED}",
                (new.session_id, expected.agent_id, expected.work_dir, expected.name),
            ).fetchone()
        ):
            raise Stale
        return None
    return _enter(conn, new.id, new.session_id, new.input, new.created_at, new.expected)


def begin(
    conn: sqlite3.Connection, run_id: str, session_id: str, content: list[ContentBlock], now: str
) -> Begun:
    conn.execute("UPDATE runs SET status = 'running', started_at = ? WHERE id = ?", (now, run_id))
    return _enter(conn, run_id, session_id, content, now)


def _enter(
    conn: sqlite3.Connection,
    run_id: str,
    session_id: str,
    content: list[ContentBlock],
    now: str,
    expected: SessionRecord | None = None,
) -> Begun:
    """The run's message enters the history; the session counts a turn and is busy."""
    moved = _move_session(
        conn, session_id, now, added=1, status="running", turns=1, expected=expected
    )
    if moved is None:
        raise Stale if expected is not None else NotFound(f"session {session_id!r} not found")
    (message,) = new_messages(session_id, moved[0], [("user", content)], run_id, now)
    messages.insert(conn, [message])
    return Begun(message, moved[1])


def add_step(conn: sqlite3.Connection, run_id: str, session_id: str, step: Step) -> list[Message]:
    """Persist a completed step: its messages, counters and usage, in one transaction."""
    moved = _move_session(conn, session_id, step.now, added=len(step.entries), usage=step.usage)
    if moved is None:
        raise NotFound(f"session {session_id!r} not found")
    conn.execute(
        "UPDATE runs SET steps = steps + 1, held_results = ?, input_tokens = input_tokens + ?, "
        "output_tokens = output_tokens + ? WHERE id = ?",
        (codec.text(step.held or []), step.usage.input_tokens, step.usage.output_tokens, run_id),
    )
    return _store_step(conn, run_id, session_id, step, moved[0])


def _store_step(
    conn: sqlite3.Connection, run_id: str, session_id: str, step: Step, last_seq: int
) -> list[Message]:
    """The step's messages, numbered up to `last_seq`, and its tool calls."""
    first = last_seq - len(step.entries) + 1
    stored = new_messages(session_id, first, step.entries, run_id, step.now, step.counted)
    messages.insert(conn, stored)
    if step.tool_calls:
        conn.executemany(
            "UPDATE runs SET tool_calls = json_insert(tool_calls, '$[#]', json(?)) WHERE id = ?",
            [(codec.text(call), run_id) for call in step.tool_calls],
        )
    return stored


def finish(
    conn: sqlite3.Connection,
    run_id: str,
    session_id: str,
    end: Finish,
    now: str,
    step: Step | None = None,
) -> list[Message]:
    """The run's end; with `step`, its last step too (what `add_step` stores), in one update
    of the session row and one of the run's: the last step and the end share a commit
    (bench turns)."""
    added, usage = (0, end.usage) if step is None else (len(step.entries), step.usage + end.usage)
    moved = _move_session(
        conn, session_id, now, added=added, usage=usage, status=end.session_status
    )
    if moved is None and step is not None:
        raise NotFound(f"session {session_id!r} not found")
    conn.execute(
        "UPDATE runs SET steps = steps + ?, held_results = coalesce(?, held_results), "
        "input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, status = ?, "
        "stop_reason = ?, error = ?, pending_tool_calls = ?, finished_at = ?, "
        "run_seconds = coalesce(?, run_seconds) WHERE id = ?",
        (
            0 if step is None else 1,
            None if step is None else codec.text(step.held or []),
            usage.input_tokens,
            usage.output_tokens,
            end.status,
            end.stop_reason,
            codec.text(end.error) if end.error else None,
            codec.text(end.pending),
            None if end.status == "requires_action" else now,
            end.run_seconds,
            run_id,
        ),
    )
    _announce(conn, run_id, session_id, now)
    if step is None or moved is None:
        return []
    return _store_step(conn, run_id, session_id, step, moved[0])


def _announce(conn: sqlite3.Connection, run_id: str, session_id: str, now: str) -> None:
    """The run's end into the webhook outbox, in the transaction that stores it."""

    def run_of() -> Run:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        return _run(
            cursor.execute(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        )

    webhooks.enqueue(conn, run_id, session_id, now, run_of)


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
            f"SELECT {_COLUMNS}, input, options, held_results, run_seconds FROM runs WHERE id = ?",
            (run_id,),
        )
        if row is None or (session_id is not None and row["session_id"] != session_id):
            raise NotFound(f"run {run_id!r} not found")
        return _stored(row)

    async def by_idempotency_key(self, key: str) -> StoredRun | None:
        """The run first started with this key, with the request it was started for."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, input, options, held_results, run_seconds FROM runs "
            "WHERE idempotency_key = ?",
            (key,),
        )
        return _stored(row) if row is not None else None

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
            f"SELECT {_COLUMNS}, input, options, held_results, run_seconds FROM runs "
            "WHERE status IN ('queued', 'running', 'requires_action') ORDER BY id"
        )
        return [_stored(row) for row in rows]

    async def of_session(self, session_id: str) -> list[Run]:
        """Every run of a session, oldest first (for exports)."""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM runs WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [_run(row) for row in rows]

    async def paused(self, session_id: str) -> StoredRun | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, input, options, held_results, run_seconds FROM runs "
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

    # -- writes: each queued at once, its future settled at its commit (see contract.py) --
    def start(self, new: NewRun) -> asyncio.Future[Begun | None]:
        return self.db.submit(lambda conn: start(conn, new))

    def begin(
        self, run_id: str, session_id: str, content: list[ContentBlock], now: str
    ) -> asyncio.Future[Begun]:
        return self.db.submit(lambda conn: begin(conn, run_id, session_id, content, now))

    def add_usage(self, run_id: str, session_id: str, usage: Usage) -> asyncio.Future[None]:
        return self.db.submit_later(lambda conn: _add_usage(conn, run_id, session_id, usage))

    def add_step(self, run_id: str, session_id: str, step: Step) -> asyncio.Future[list[Message]]:
        return self.db.submit(lambda conn: add_step(conn, run_id, session_id, step))

    def finish(
        self, run_id: str, session_id: str, end: Finish, now: str, step: Step | None = None
    ) -> asyncio.Future[list[Message]]:
        return self.db.submit(lambda conn: finish(conn, run_id, session_id, end, now, step))

    def resume(
        self, run_id: str, session_id: str, results: list[ContentBlock], now: str
    ) -> asyncio.Future[Message]:
        return self.db.submit(lambda conn: resume(conn, run_id, session_id, results, now))

    def close(
        self, run_id: str, session_id: str, results: list[ContentBlock], end: Finish, now: str
    ) -> asyncio.Future[None]:
        def op(conn: sqlite3.Connection) -> None:
            if results:
                messages.append(conn, session_id, "user", results, run_id, now)
            finish(conn, run_id, session_id, end, now)

        return self.db.submit(op)
