"""Messages: the append-only history of each session, numbered by `seq` from 1."""

from __future__ import annotations

import sqlite3
from typing import Any

from server.models import ContentBlock, Message, Role, new_messages
from server.store import codec, searchindex
from server.store.sqlite import Database

_COLUMNS = "id, session_id, seq, role, content, run_id, created_at"


def _message(row: Any) -> Message:
    return Message(
        id=row[0],
        session_id=row[1],
        seq=row[2],
        role=row[3],
        content=codec.decode_content(row[4]),
        run_id=row[5],
        created_at=row[6],
    )


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
    conn.execute(
        f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (message.id, session_id, seq, role, codec.text(content), run_id, now),
    )
    searchindex.index(conn, [(message.id, content)])
    return message


def insert(conn: sqlite3.Connection, stored: list[Message]) -> None:
    """Insert messages already numbered (the caller moved their session's last_seq)."""
    conn.executemany(
        f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (m.id, m.session_id, m.seq, m.role, codec.text(m.content), m.run_id, m.created_at)
            for m in stored
        ],
    )
    searchindex.index(conn, [(m.id, m.content) for m in stored])


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

    async def of_run(self, run_id: str) -> list[Message]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM messages WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [_message(row) for row in rows]
