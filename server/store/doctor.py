"""`sessiond doctor`'s checks of a database file, each a line with ok or a problem.

A run left `running` or `queued` is only a problem when no server holds the database (its
lock, store/lock.py, is free): a live server is working on it, and a dead one left it for the
next start's recovery. A session's history is one a model refuses when an assistant message
has a `tool_use` that the next message does not answer with its `tool_result`; the last
message of a session paused for client tools (a run in `requires_action`) is waiting for
exactly that and is fine.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec

from server.store.backup import BackupError, open_read_only
from server.store.lock import DatabaseInUse, DatabaseLock
from server.store.sqlite import SCHEMA_PATH, schema_steps

SHOWN = 5  # ids named in a problem's line, at most

UNPAIRED = """
SELECT DISTINCT m.session_id FROM messages AS m, json_each(m.content) AS b
WHERE m.role = 'assistant' AND json_extract(b.value, '$.type') = 'tool_use'
  AND NOT EXISTS (
    SELECT 1 FROM messages AS n, json_each(n.content) AS r
    WHERE n.session_id = m.session_id AND n.seq = m.seq + 1 AND n.role = 'user'
      AND json_extract(r.value, '$.type') = 'tool_result'
      AND json_extract(r.value, '$.tool_use_id') = json_extract(b.value, '$.id'))
  AND NOT (
    m.seq = (SELECT max(seq) FROM messages WHERE session_id = m.session_id)
    AND EXISTS (
      SELECT 1 FROM runs WHERE session_id = m.session_id AND status = 'requires_action'))
ORDER BY m.session_id
"""


class Check(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


def examine(path: str, max_wal_bytes: int) -> list[Check]:
    """Every check, in order; a check that cannot run is a problem saying why."""
    wal = Path(f"{path}-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0  # before opening: closing checkpoints
    try:
        conn = open_read_only(path)
    except (BackupError, sqlite3.Error) as exc:
        return [Check("database", False, str(exc))]
    with contextlib.closing(conn):
        served = _served(path)
        checks = [_guarded("schema", _schema, conn), _guarded("integrity", _integrity, conn)]
        checks.append(_wal(wal_bytes, max_wal_bytes))
        checks.append(_guarded("stuck runs", lambda c: _stuck(c, served), conn))
        checks.append(_guarded("orphan messages", _orphans, conn))
        checks.append(_guarded("histories", _unpaired, conn))
    return checks


def _guarded(
    name: str, check: Callable[[sqlite3.Connection], tuple[bool, str]], conn: sqlite3.Connection
) -> Check:
    try:
        ok, detail = check(conn)
    except sqlite3.Error as exc:
        ok, detail = False, f"could not check: {exc}"
    return Check(name, ok, detail)


def _schema(conn: sqlite3.Connection) -> tuple[bool, str]:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    expected = len(schema_steps(SCHEMA_PATH.read_text()))
    if current == expected:
        return True, f"schema step {current}, this server's latest"
    if current < expected:
        return False, f"schema step {current} of {expected}: a server start will upgrade it"
    return False, f"schema step {current}, newer than this server's {expected}: upgrade sessiond"


def _integrity(conn: sqlite3.Connection) -> tuple[bool, str]:
    found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if found == ["ok"]:
        return True, "integrity_check ok"
    return False, f"integrity_check: {'; '.join(found[:SHOWN])}"


def _wal(size: int, limit: int) -> Check:
    if size <= limit:
        return Check("wal", True, f"write-ahead log {size} bytes")
    return Check(
        "wal",
        False,
        f"write-ahead log {size} bytes, over {limit}: a reader holds it open, or checkpoints "
        "are failing",
    )


def _served(path: str) -> bool:
    """A live server holds the database's lock."""
    lock = DatabaseLock(path)
    try:
        lock.acquire()
    except DatabaseInUse:
        return True
    lock.release()
    return False


def _stuck(conn: sqlite3.Connection, served: bool) -> tuple[bool, str]:
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM runs WHERE status IN ('running', 'queued') ORDER BY id"
        )
    ]
    if not ids:
        return True, "no run left running"
    if served:
        return True, f"{len(ids)} runs running or queued, by the server that holds the database"
    return False, (
        f"{len(ids)} runs left running or queued with no server alive ({_named(ids)}); the "
        "next server start marks them interrupted"
    )


def _orphans(conn: sqlite3.Connection) -> tuple[bool, str]:
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT m.id FROM messages AS m WHERE m.run_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM runs AS r WHERE r.id = m.run_id) ORDER BY m.id"
        )
    ]
    if not ids:
        return True, "every message's run exists"
    return False, f"{len(ids)} messages name a run that does not exist ({_named(ids)})"


def _unpaired(conn: sqlite3.Connection) -> tuple[bool, str]:
    ids = [row[0] for row in conn.execute(UNPAIRED)]
    if not ids:
        return True, "every tool_use is answered by the next message"
    return False, (
        f"{len(ids)} sessions have a tool_use the next message does not answer, which a model "
        f"would refuse ({_named(ids)}); sessiond answers them as interrupted when it runs one"
    )


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
