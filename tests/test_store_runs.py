"""The runner's write operations (store/runs.py) on a real SQLite file: a turn's start, step
and end leave the counters they should, each in a statement or two; a start checked against
a session record refuses, writing nothing, when the session is no longer so."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from server.models import (
    ErrorInfo,
    PendingToolCall,
    TextBlock,
    ToolCallRecord,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    new_session_record,
)
from server.store import Finish, NewRun, Stale, Step
from server.store import runs as run_ops
from server.store import sessions as session_ops
from server.store.sqlite import SCHEMA_PATH, _connect_writer, _migrate, schema_steps
from tests import pg

SESSION = msgspec.structs.replace(
    new_session_record("a", "/w", name="named", ttl_seconds=60),
    id="s",
    created_at="2026-01-01T00:00:00.000Z",
    updated_at="2026-01-01T00:00:00.000Z",
)


@pytest.fixture(params=["sqlite", "postgres"])
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The writer's connection, on each database (PostgreSQL's as the writer drives it, in a
    transaction the test's length)."""
    if request.param == "sqlite":
        conn = _connect_writer(str(tmp_path / "r.db"))
        _migrate(conn, schema_steps(SCHEMA_PATH.read_text()))
        closing = conn.close
    else:
        conn, closing = pg.writer_connection(request.getfixturevalue("pg_url"))
    conn.execute(
        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
        "VALUES ('a', 'a', 'echo', 'n', 'n'), ('b', 'b', 'echo', 'n', 'n')"
    )
    yield conn
    closing()


def new_session(conn: sqlite3.Connection, sid: str) -> None:
    session_ops.insert(conn, msgspec.structs.replace(SESSION, id=sid, name=sid), "default")


def start(conn: sqlite3.Connection, sid: str, rid: str, **extra: Any) -> Any:
    new = NewRun(rid, sid, "a", "running", [TextBlock("hi")], {}, None, "t0", **extra)
    return run_ops.start(conn, new)


def state(conn: sqlite3.Connection, sid: str, rid: str) -> Any:
    run = conn.execute(
        "SELECT status, steps, input_tokens, output_tokens, stop_reason, error, tool_calls, "
        "pending_tool_calls, held_results, finished_at IS NULL FROM runs WHERE id = ?",
        (rid,),
    ).fetchone()
    session = conn.execute(
        "SELECT status, last_seq, message_count, turn_count, input_tokens, output_tokens, "
        "updated_at, expires_at FROM sessions WHERE id = ?",
        (sid,),
    ).fetchone()
    messages = conn.execute(
        "SELECT seq, role, content, run_id = ?, created_at FROM messages WHERE session_id = ? "
        "ORDER BY seq",
        (rid, sid),
    ).fetchall()
    return run, session, messages


def test_start_step_and_end_keep_the_counters(conn: Any) -> None:
    new_session(conn, "s")
    begun = start(conn, "s", "r")
    assert begun.message.seq == 1 and begun.message_count == 1
    call = ToolUseBlock("c1", "client_tool", {"x": 1})
    record = ToolCallRecord("c0", "list_files", {}, 3, False, 1, 0)
    first = Step(
        [("assistant", [TextBlock("look")]), ("user", [ToolResultBlock("c0", "r")])],
        Usage(5, 2),
        [record],
        "t1",
    )
    paused = Step([("assistant", [call])], Usage(7, 3), [], "t2", [ToolResultBlock("c9", "h")])
    stored = run_ops.add_step(conn, "r", "s", first) + run_ops.add_step(conn, "r", "s", paused)
    assert [(m.seq, m.role) for m in stored] == [(2, "assistant"), (3, "user"), (4, "assistant")]
    pending = [PendingToolCall("c1", "client_tool", {"x": 1})]
    end = Finish("requires_action", "requires_action", None, Usage(0, 1), pending, None)
    run_ops.finish(conn, "r", "s", end, "2026-01-01T00:00:03.000Z")
    run, session, messages = state(conn, "s", "r")
    assert run[:5] == ("requires_action", 2, 12, 6, "requires_action")
    assert '"list_files"' in run[6] and '"c1"' in run[7] and '"c9"' in run[8] and run[9] == 1
    t3, expiry = "2026-01-01T00:00:03.000Z", "2026-01-01T00:01:03.000Z"  # ttl 60 s
    assert session == ("running", 4, 4, 1, 12, 6, t3, expiry)
    assert [(m[0], m[1], m[4]) for m in messages] == [
        (1, "user", "t0"),
        (2, "assistant", "t1"),
        (3, "user", "t1"),
        (4, "assistant", "t2"),
    ]


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE sessions SET archived_at = 'x'",
        "UPDATE sessions SET status = 'requires_action'",
        "UPDATE sessions SET agent_id = 'b'",
        "UPDATE sessions SET work_dir = '/elsewhere'",
        "UPDATE sessions SET name = 'renamed'",
        "DELETE FROM sessions",
    ],
)
@pytest.mark.parametrize("status", ["running", "queued"])
def test_a_start_checked_against_a_stale_record_writes_nothing(
    conn: Any, change: str, status: str
) -> None:
    new_session(conn, "s")
    expected = msgspec.structs.replace(SESSION, name="s")
    assert start(conn, "s", "r0", expected=expected) is not None  # still as read: starts
    conn.execute(change)
    changed = state(conn, "s", "r0")
    new = NewRun("r1", "s", "a", status, [TextBlock("hi")], {}, None, "t0", expected)
    conn.execute("SAVEPOINT op")  # as the writer runs every operation
    with pytest.raises((Stale, sqlite3.IntegrityError)):  # a deleted one: no run row
        run_ops.start(conn, new)
    conn.execute("ROLLBACK TO op")
    assert state(conn, "s", "r0") == changed
    assert conn.execute("SELECT count(*) FROM runs WHERE id = 'r1'").fetchone()[0] == 0


@pytest.mark.parametrize("status", ["completed", "failed", "requires_action"])
def test_the_last_step_stored_with_the_end_leaves_what_the_two_writes_did(
    conn: Any, status: str
) -> None:
    record = ToolCallRecord("c0", "list_files", {}, 3, False, 1, 0)
    step = Step(
        [
            ("assistant", [TextBlock("done"), ToolUseBlock("c0", "list_files", {})]),
            ("user", [ToolResultBlock("c0", "r")]),
        ],
        Usage(9, 4),
        [record],
        "t1",
        [ToolResultBlock("c0", "r")] if status == "requires_action" else None,
    )
    error = ErrorInfo("provider_error", "x") if status == "failed" else None
    end = Finish(status, "end_turn", error, Usage(2, 1), [], "idle")
    for sid in ("apart", "together"):
        new_session(conn, sid)
        start(conn, sid, f"r-{sid}")
    run_ops.add_step(conn, "r-apart", "apart", step)
    run_ops.finish(conn, "r-apart", "apart", end, "2026-01-01T00:00:05.000Z")
    stored = run_ops.finish(conn, "r-together", "together", end, "2026-01-01T00:00:05.000Z", step)
    assert [(m.seq, m.role, m.content) for m in stored] == [
        (n, r, b) for n, (r, b) in enumerate(step.entries, 2)
    ]
    assert state(conn, "apart", "r-apart") == state(conn, "together", "r-together")
