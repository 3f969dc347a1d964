"""Sessions: their settings, counters and usage totals (the history is in messages.py)."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from server.errors import Conflict, NotFound
from server.ids import new_ulid
from server.models import Page, SessionRecord, Usage
from server.store import codec, searchindex
from server.store.contract import SessionFilter
from server.store.pages import decode_cursor, encode_cursor
from server.store.sqlite import Database

COLUMNS = (
    "id, name, agent_id, work_dir, title, tags, metadata, status, message_count, turn_count, "
    "input_tokens, output_tokens, parent_id, forked_from_message_id, ttl_seconds, expires_at, "
    "archived_at, created_at, updated_at, webhook_url"
)
EDITABLE = frozenset(
    {
        "name",
        "agent_id",
        "work_dir",
        "title",
        "tags",
        "metadata",
        "ttl_seconds",
        "webhook_url",
        "webhook_secret",  # sealed
    }
)
_JSON_COLUMNS = frozenset({"tags", "metadata"})
# expires_at follows updated_at: `?` is the new updated_at.
TOUCH_EXPIRY = (
    "expires_at = CASE WHEN ttl_seconds IS NULL THEN NULL "
    "ELSE strftime('%Y-%m-%dT%H:%M:%fZ', ?, '+' || ttl_seconds || ' seconds') END"
)


def record(row: Any) -> SessionRecord:
    status = "archived" if row["archived_at"] else row["status"]
    return SessionRecord(
        id=row["id"],
        name=row["name"],
        agent_id=row["agent_id"],
        work_dir=row["work_dir"],
        title=row["title"],
        tags=codec.decode_strings(row["tags"]),
        metadata=codec.decode_object(row["metadata"]),
        status=status,
        message_count=row["message_count"],
        turn_count=row["turn_count"],
        usage=Usage(row["input_tokens"], row["output_tokens"]),
        parent_id=row["parent_id"],
        forked_from_message_id=row["forked_from_message_id"],
        ttl_seconds=row["ttl_seconds"],
        expires_at=row["expires_at"],
        archived_at=row["archived_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        webhook_url=row["webhook_url"],
    )


def _integrity(exc: sqlite3.IntegrityError, name: str | None) -> Exception:
    if "sessions.tenant, sessions.name" in str(exc):
        return Conflict(f"a session named {name!r} already exists", field="name")
    if "FOREIGN KEY" in str(exc):
        return NotFound("agent not found", field="agent_id")
    return exc


def insert(
    conn: sqlite3.Connection,
    rec: SessionRecord,
    tenant: str,
    last_seq: int = 0,
    webhook_secret: str | None = None,
) -> None:
    try:
        conn.execute(
            f"INSERT INTO sessions ({COLUMNS}, last_seq, tenant, webhook_secret) VALUES "
            f"({', '.join('?' * 23)})",
            (
                rec.id,
                rec.name,
                rec.agent_id,
                rec.work_dir,
                rec.title,
                codec.text(rec.tags),
                codec.text(rec.metadata),
                "idle",
                rec.message_count,
                rec.turn_count,
                rec.usage.input_tokens,
                rec.usage.output_tokens,
                rec.parent_id,
                rec.forked_from_message_id,
                rec.ttl_seconds,
                None,
                rec.archived_at,
                rec.created_at,
                rec.updated_at,
                rec.webhook_url,
                last_seq,
                tenant,
                webhook_secret,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise _integrity(exc, rec.name) from exc
    conn.execute(f"UPDATE sessions SET {TOUCH_EXPIRY} WHERE id = ?", (rec.updated_at, rec.id))


class Sessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str, tenant: str | None) -> SessionRecord:
        """By id or by name (unique within the tenant). With no tenant: by id only."""
        if tenant is None:
            row = await self.db.fetchone(f"SELECT {COLUMNS} FROM sessions WHERE id = ?", (key,))
        else:
            row = await self.db.fetchone(
                f"SELECT {COLUMNS} FROM sessions WHERE id = ? AND tenant = ? UNION ALL "
                f"SELECT {COLUMNS} FROM sessions WHERE tenant = ? AND name = ? LIMIT 1",
                (key, tenant, tenant, key),
            )
        if row is None:
            raise NotFound(f"session {key!r} not found")
        return record(row)

    async def find_by_name(self, name: str, tenant: str) -> SessionRecord | None:
        row = await self.db.fetchone(
            f"SELECT {COLUMNS} FROM sessions WHERE tenant = ? AND name = ?", (tenant, name)
        )
        return record(row) if row is not None else None

    async def create(
        self, rec: SessionRecord, tenant: str, webhook_secret: str | None = None
    ) -> SessionRecord:
        await self.db.write(lambda conn: insert(conn, rec, tenant, webhook_secret=webhook_secret))
        return await self.get(rec.id, None)

    async def update(self, session_id: str, changes: dict[str, Any], now: str) -> SessionRecord:
        unknown = set(changes) - EDITABLE
        assert not unknown, unknown
        sets = [f"{column} = ?" for column in changes]
        values = [
            codec.text(value) if column in _JSON_COLUMNS else value
            for column, value in changes.items()
        ]

        def op(conn: sqlite3.Connection) -> int:
            try:
                cursor = conn.execute(
                    f"UPDATE sessions SET {', '.join([*sets, 'updated_at = ?'])} WHERE id = ?",
                    (*values, now, session_id),
                )
            except sqlite3.IntegrityError as exc:
                raise _integrity(exc, changes.get("name")) from exc
            conn.execute(f"UPDATE sessions SET {TOUCH_EXPIRY} WHERE id = ?", (now, session_id))
            return cursor.rowcount

        if await self.db.write(op) == 0:
            raise NotFound(f"session {session_id!r} not found")
        return await self.get(session_id, None)

    async def set_archived(self, session_id: str, archived_at: str | None, now: str) -> None:
        """Archiving or unarchiving is activity: it moves updated_at and so expires_at."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE sessions SET archived_at = ?, updated_at = ?, {TOUCH_EXPIRY} WHERE id = ?",
                (archived_at, now, now, session_id),
            )

        await self.db.write(op)

    async def fork(
        self, source_id: str, at_message_id: str | None, rec: SessionRecord, tenant: str
    ) -> None:
        """Create `rec` holding a copy of the source's history up to `at_message_id` (default:
        all of it). One transaction: the copy holds whole steps, as the runner stores them."""
        await self.db.write(lambda conn: _fork(conn, source_id, at_message_id, rec, tenant))

    async def delete_expired(self, session_id: str, now: str) -> bool:
        """Delete the session if it is still expired and idle (a message may have come)."""

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM sessions WHERE id = ? AND expires_at IS NOT NULL AND expires_at <= ? "
                "AND status NOT IN ('running', 'requires_action')",
                (session_id, now),
            ).rowcount

        return bool(await self.db.write(op))

    async def delete(self, session_id: str) -> None:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount

        if await self.db.write(op) == 0:
            raise NotFound(f"session {session_id!r} not found")

    async def page(
        self, tenant: str, where: SessionFilter, limit: int, cursor: str | None
    ) -> Page[SessionRecord]:
        order = where.order
        clauses, params = _filters(where)
        clauses.insert(0, "tenant = ?")
        params.insert(0, tenant)
        if cursor:
            key = decode_cursor(cursor, 2)
            clauses.append(f"({order}, id) < (?, ?)")
            params += [str(key[0]), str(key[1])]
        sql = f"SELECT {COLUMNS} FROM sessions WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {order} DESC, id DESC LIMIT ?"
        rows = await self.db.fetchall(sql, (*params, limit + 1))
        data = [record(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and data:
            last = data[-1]
            next_cursor = encode_cursor(getattr(last, order), last.id)
        return Page(data, next_cursor)

    async def expired(self, now: str, limit: int = 100) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "AND status NOT IN ('running', 'requires_action') LIMIT ?",
            (now, limit),
        )
        return [row["id"] for row in rows]

    async def idle_orphans(self) -> None:
        await self.db.write(_idle_orphans)


def _filters(where: SessionFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if where.status == "archived":
        clauses.append("archived_at IS NOT NULL")
    elif where.status is None and where.include_archived:
        pass
    else:
        clauses.append("archived_at IS NULL")
        if where.status is not None:
            clauses.append("status = ?")
            params.append(where.status)
    for column in ("agent_id", "work_dir", "name"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    for tag in where.tags:
        clauses.append("EXISTS (SELECT 1 FROM json_each(sessions.tags) WHERE value = ?)")
        params.append(tag)
    return clauses, params


def _fork(
    conn: sqlite3.Connection,
    source_id: str,
    at_message_id: str | None,
    rec: SessionRecord,
    tenant: str,
) -> None:
    if at_message_id is not None:
        at = conn.execute(
            "SELECT seq, id FROM messages WHERE id = ? AND session_id = ?",
            (at_message_id, source_id),
        ).fetchone()
        if at is None:
            raise NotFound(
                f"message {at_message_id!r} is not in session {source_id}", field="at_message_id"
            )
    else:
        at = conn.execute(
            "SELECT seq, id FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
            (source_id,),
        ).fetchone()
    upto, message_id = (at[0], at[1]) if at is not None else (0, None)
    rows = conn.execute(
        "SELECT seq, role, content, created_at, tokens, tokens_source, compaction FROM messages "
        "WHERE session_id = ? AND seq <= ? ORDER BY seq",
        (source_id, upto),
    ).fetchall()
    copy = msgspec.structs.replace(rec, message_count=len(rows), forked_from_message_id=message_id)
    insert(conn, copy, tenant, last_seq=upto)
    # the copies belong to no run of the fork: its runs, turns and usage start at zero
    copies = [(new_ulid(), rec.id, *row) for row in rows]
    conn.executemany(
        "INSERT INTO messages (id, session_id, seq, role, content, run_id, created_at, tokens, "
        "tokens_source, compaction) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)",
        copies,
    )
    searchindex.index(conn, [(c[0], codec.decode_content(c[4])) for c in copies])


def _idle_orphans(conn: sqlite3.Connection) -> None:
    conn.execute(
        "UPDATE sessions SET status = 'idle' WHERE status = 'running' AND NOT EXISTS "
        "(SELECT 1 FROM runs WHERE runs.session_id = sessions.id AND runs.status = 'running')"
    )
