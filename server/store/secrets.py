"""Secrets the server makes for itself, by name, as sealed text (the store never sees them
in clear: sealing is its callers' job)."""

from __future__ import annotations

import sqlite3

from server.store.sqlite import Database


class Secrets:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, name: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM secrets WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    async def keep(self, name: str, value: str, now: str) -> str:
        """Store `value` unless the name has one already; either way the value that stays
        (two processes starting at once agree on one)."""

        def op(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, value, now),
            )
            return str(
                conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0]
            )

        return await self.db.write(op)

    async def replace(self, name: str, value: str, now: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "created_at = excluded.created_at",
                (name, value, now),
            )

        await self.db.write(op)
