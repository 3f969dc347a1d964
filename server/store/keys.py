"""API keys: found by the hash of the key a request carries; the key itself is never stored."""

from __future__ import annotations

import sqlite3
from typing import Any

from server.errors import NotFound
from server.models import ApiKey, Page
from server.store.pages import decode_cursor, encode_cursor
from server.store.sqlite import Database

_COLUMNS = "id, name, scope, created_at, last_used_at, revoked_at, tenant"


def _key(row: Any) -> ApiKey:
    """A row of _COLUMNS, from a reader or from the writer (which gives plain tuples)."""
    return ApiKey(
        id=row[0],
        name=row[1],
        scope=row[2],
        created_at=row[3],
        last_used_at=row[4],
        revoked_at=row[5],
        tenant=row[6],
    )


class Keys:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, key: ApiKey, digest: str) -> ApiKey:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, name, scope, hash, created_at, tenant) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key.name, key.scope, digest, key.created_at, key.tenant),
            )

        await self.db.write(op)
        return key

    async def page(self, tenant: str | None, limit: int, cursor: str | None) -> Page[ApiKey]:
        after = str(decode_cursor(cursor, 1)[0]) if cursor else ""
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM api_keys WHERE id > ? AND (? IS NULL OR tenant = ?) "
            "ORDER BY id LIMIT ?",
            (after, tenant, tenant, limit + 1),
        )
        keys = [_key(row) for row in rows[:limit]]
        more = len(rows) > limit and keys
        return Page(keys, encode_cursor(keys[-1].id) if more else None)

    async def by_digest(self, digest: str) -> ApiKey | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (digest,)
        )
        return _key(row) if row is not None else None

    async def made(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM api_keys")
        return int(row[0])

    async def revoke(self, key_id: str, now: str, tenant: str | None) -> ApiKey:
        def op(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? "
                f"AND (? IS NULL OR tenant = ?) RETURNING {_COLUMNS}",
                (now, key_id, tenant, tenant),
            ).fetchone()

        row = await self.db.write(op)
        if row is None:
            raise NotFound(f"key {key_id!r} not found")
        return _key(row)

    def used(self, key_id: str, now: str) -> None:
        """Note the key's use with the next commit, costing no commit of its own."""
        self.db.submit_later(
            lambda conn: conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id)
            )
        )
