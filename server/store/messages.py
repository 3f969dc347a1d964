"""Messages: the append-only history of each session, numbered by `seq` from 1."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import msgspec

from server.errors import NotFound
from server.models import ContentBlock, Message, Role, estimate_tokens, new_messages
from server.store import codec, searchindex
from server.store.sqlite import Database

_COLUMNS = (
    "id, session_id, seq, role, content, run_id, created_at, tokens, tokens_source, compaction"
)
_PLACES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?"


def _message(row: Any) -> Message:
    compaction = row[9]
    return Message(
        id=row[0],
        session_id=row[1],
        seq=row[2],
        role=row[3],
        content=codec.decode_content(row[4]),
        run_id=row[5],
        created_at=row[6],
        tokens=row[7],
        tokens_source=row[8],
        compaction=codec.decode_compaction(compaction) if compaction else None,
    )


def values(m: Message) -> tuple[Any, ...]:
    """A message's row, in `_COLUMNS`' order."""
    compaction = codec.text(m.compaction) if m.compaction is not None else None
    content = codec.text(m.content)
    tokens = m.tokens or estimate_tokens(m.content)  # an import from before token counts: 0
    return (m.id, m.session_id, m.seq, m.role, content, m.run_id, m.created_at, tokens,
            m.tokens_source, compaction)  # fmt: skip


def append(
    conn: sqlite3.Connection,
    session_id: str,
    role: Role,
    content: list[ContentBlock],
    run_id: str | None,
    now: str,
) -> Message:
    """Add one message at the end of a session's history (inside the caller's transaction)."""
    (seq,) = conn.execute(
        "UPDATE sessions SET last_seq = last_seq + 1, message_count = message_count + 1 "
        "WHERE id = ? RETURNING last_seq",
        (session_id,),
    ).fetchone()
    (message,) = new_messages(session_id, seq, [(role, content)], run_id, now)
    conn.execute(f"INSERT INTO messages ({_COLUMNS}) VALUES ({_PLACES})", values(message))
    searchindex.index(conn, [(message.id, content)])
    return message


def insert(conn: sqlite3.Connection, stored: list[Message]) -> None:
    """Insert messages already numbered (the caller moved their session's last_seq)."""
    conn.executemany(
        f"INSERT INTO messages ({_COLUMNS}) VALUES ({_PLACES})", [values(m) for m in stored]
    )
    searchindex.index(conn, [(m.id, m.content) for m in stored])


def add_compaction(conn: sqlite3.Connection, entry: Message) -> tuple[Message, int]:
    """Store a compaction entry at the end of its session's history (its seq is given
    there); the turns it summarises stay as they are."""
    row = conn.execute(
        "UPDATE sessions SET last_seq = last_seq + 1, message_count = message_count + 1, "
        "updated_at = ? WHERE id = ? RETURNING last_seq, message_count",
        (entry.created_at, entry.session_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"session {entry.session_id!r} not found")
    seq, count = row
    entry = msgspec.structs.replace(entry, seq=seq)
    conn.execute(f"INSERT INTO messages ({_COLUMNS}) VALUES ({_PLACES})", values(entry))
    searchindex.index(conn, [(entry.id, entry.content)])
    return entry, count


class Messages:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, session_id: str, after: int, limit: int) -> list[Message]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (session_id, after, limit),
        )
        return [_message(row) for row in rows]

    async def history(self, session_id: str) -> list[Message]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        return [_message(row) for row in rows]

    async def since_compaction(self, session_id: str) -> list[Message]:
        """What a run's input is built from: the session's latest compaction entry, then the
        turns after what it summarises (without compactions); with none, the whole history.
        Two index reads, however long the history behind the entry."""
        latest = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND role = 'compaction' "
            "ORDER BY seq DESC LIMIT 1",
            (session_id,),
        )
        if not latest:
            return await self.history(session_id)
        entry = _message(latest[0])
        through = entry.compaction.through_seq if entry.compaction is not None else entry.seq
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE session_id = ? AND seq > ? "
            "AND role <> 'compaction' ORDER BY seq",
            (session_id, through),
        )
        return [entry, *(_message(row) for row in rows)]

    def add_compaction(self, entry: Message) -> asyncio.Future[tuple[Message, int]]:
        return self.db.submit(lambda conn: add_compaction(conn, entry))

    async def of_run(self, run_id: str) -> list[Message]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [_message(row) for row in rows]
