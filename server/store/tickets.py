"""Queue tickets (schema step 10): on a database several processes share, a message queued
with `if_busy: queue` is stored at once as a queued run holding the session's next ticket,
and the session's queued runs start in ticket order. The ticket is taken in the transaction
that stores the run, so the order is the database's: the order in which the commits that
stored the runs took the session row."""

from __future__ import annotations

import asyncio
import sqlite3

from server.errors import NotFound
from server.store import runs
from server.store.contract import NewRun
from server.store.sqlite import Database


def take(conn: sqlite3.Connection, new: NewRun) -> int:
    """Store the queued run `new` with the session's next ticket; the ticket."""
    row = conn.execute(
        "UPDATE sessions SET tickets = tickets + 1 WHERE id = ? RETURNING tickets",
        (new.session_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"session {new.session_id!r} not found")
    runs.start(conn, new)  # queued: the run row alone (its message is stored as it begins)
    conn.execute("UPDATE runs SET ticket = ? WHERE id = ?", (row[0], new.id))
    return int(row[0])


class Tickets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def take(self, new: NewRun) -> asyncio.Future[int]:
        return self.db.submit(lambda conn: take(conn, new))

    async def first(self, session_id: str) -> str | None:
        """The queued run holding the session's lowest ticket, if one waits."""
        row = await self.db.fetchone(
            "SELECT id FROM runs WHERE session_id = ? AND status = 'queued' "
            "AND ticket IS NOT NULL ORDER BY ticket LIMIT 1",
            (session_id,),
        )
        return None if row is None else str(row[0])
