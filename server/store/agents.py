"""Agents: stored definitions of provider, model, prompt and tools."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from server.errors import Conflict, NotFound
from server.models import Agent, Page, compact_at_of, context_window_of
from server.store import codec
from server.store.contract import DEFAULT_AGENT_ID
from server.store.pages import decode_cursor, encode_cursor
from server.store.sqlite import Database

T = TypeVar("T")
DEFAULT_ID = DEFAULT_AGENT_ID
_COLUMNS = (
    "id, name, provider, model, system, tools, max_steps, max_tokens, temperature, options, "
    "max_run_seconds, context_window, compact_at, summary_agent, webhook_url, created_at, "
    "updated_at"
)
_SELECT = f"{_COLUMNS}, tenant"


def _agent(row: Any) -> Agent:
    """An agent as stored, its context window and compact_at resolved (NULL: the defaults
    for its provider and model, so they follow a change of model)."""
    agent = _stored(row)
    agent.context_window = context_window_of(agent)
    agent.compact_at = compact_at_of(agent)
    return agent


def _stored(row: Any) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        provider=row["provider"],
        model=row["model"],
        system=row["system"],
        tools=codec.decode_tools(row["tools"]),
        max_steps=row["max_steps"],
        max_tokens=row["max_tokens"],
        temperature=row["temperature"],
        options=codec.decode_object(row["options"]),
        max_run_seconds=row["max_run_seconds"],
        context_window=row["context_window"],
        compact_at=row["compact_at"],
        summary_agent=row["summary_agent"],
        webhook_url=row["webhook_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _values(agent: Agent) -> tuple[Any, ...]:
    return (
        agent.name,
        agent.provider,
        agent.model,
        agent.system,
        codec.text(agent.tools),
        agent.max_steps,
        agent.max_tokens,
        agent.temperature,
        codec.text(agent.options),
        agent.max_run_seconds,
        agent.context_window,
        agent.compact_at,
        agent.summary_agent,
        agent.webhook_url,
        agent.updated_at,
    )


_PLACES = ", ".join("?" * 17)


def insert(
    conn: sqlite3.Connection, agent: Agent, tenant: str, webhook_secret: str | None = None
) -> None:
    try:
        conn.execute(
            f"INSERT INTO agents ({_COLUMNS}, tenant, webhook_secret) VALUES ({_PLACES}, ?, ?)",
            (
                agent.id,
                *_values(agent)[:-1],
                agent.created_at,
                agent.updated_at,
                tenant,
                webhook_secret,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise _name_taken(agent) from exc


def _name_taken(agent: Agent) -> Conflict:
    return Conflict(f"an agent named {agent.name!r} already exists", field="name")


class Agents:
    """Every run reads its agent, and agents change only through the methods below, so `get`
    answers from a cache that each of them clears once its write is settled. A read that
    overlapped a write is not cached: `_changes` counts the writes. The cache keeps each
    agent's tenant, so that it answers only its tenant (and everyone for the built-in)."""

    def __init__(self, db: Database, cache_size: int = 1024) -> None:
        self.db = db
        self.cache_size = cache_size
        self._cache: dict[str, tuple[Agent, str]] = {}
        self._changes = 0

    async def get(self, agent_id: str, tenant: str | None) -> Agent:
        cached = self._cache.get(agent_id)
        if cached is None:
            changes = self._changes
            row = await self.db.fetchone(f"SELECT {_SELECT} FROM agents WHERE id = ?", (agent_id,))
            if row is None:
                raise NotFound(f"agent {agent_id!r} not found")
            cached = (_agent(row), row["tenant"])
            if changes == self._changes:
                if len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
                self._cache[agent_id] = cached
        agent, owner = cached
        if tenant is not None and owner != tenant and agent_id != DEFAULT_ID:
            raise NotFound(f"agent {agent_id!r} not found")
        return agent

    async def _write(self, agent_id: str, op: Callable[[sqlite3.Connection], T]) -> T:
        """`op`, then the cache forgets the agent: when the write settles, even if the caller
        has been cancelled meanwhile, and before the caller goes on."""

        def forget(_: object) -> None:
            self._changes += 1
            self._cache.pop(agent_id, None)

        written = self.db.submit(op)
        written.add_done_callback(forget)
        return await written

    async def find_by_name(self, name: str, tenant: str) -> Agent | None:
        """The tenant's own agent of that name first, else the built-in if it is so named."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM agents WHERE name = ? AND (tenant = ? OR id = ?) "
            "ORDER BY id = ? LIMIT 1",
            (name, tenant, DEFAULT_ID, DEFAULT_ID),
        )
        return _agent(row) if row is not None else None

    async def page(self, tenant: str, limit: int, cursor: str | None) -> Page[Agent]:
        after = decode_cursor(cursor, 2) if cursor else ["", ""]
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM agents WHERE (tenant = ? OR id = ?) "
            "AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?",
            (tenant, DEFAULT_ID, str(after[0]), str(after[1]), limit + 1),
        )
        agents = [_agent(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = agents[-1] if agents else None
        return Page(agents, encode_cursor(last.created_at, last.id) if more and last else None)

    async def create(self, agent: Agent, tenant: str, webhook_secret: str | None = None) -> Agent:
        await self._write(agent.id, lambda conn: insert(conn, agent, tenant, webhook_secret))
        return agent

    async def replace(self, agent: Agent, tenant: str, webhook_secret: str | None = None) -> Agent:
        """`webhook_secret`: a new endpoint's (None: the one kept while the URL stays, none
        once it goes)."""

        def op(conn: sqlite3.Connection) -> int:
            try:
                cursor = conn.execute(
                    "UPDATE agents SET webhook_secret = CASE WHEN ? IS NOT NULL THEN ? "
                    "WHEN webhook_url IS ? THEN webhook_secret END, "
                    "name = ?, provider = ?, model = ?, system = ?, tools = ?, "
                    "max_steps = ?, max_tokens = ?, temperature = ?, options = ?, "
                    "max_run_seconds = ?, context_window = ?, compact_at = ?, "
                    "summary_agent = ?, webhook_url = ?, updated_at = ?, auto = 0 "
                    "WHERE id = ? AND tenant = ?",
                    (
                        webhook_secret,
                        webhook_secret,
                        agent.webhook_url,
                        *_values(agent),
                        agent.id,
                        tenant,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise _name_taken(agent) from exc
            return cursor.rowcount

        if await self._write(agent.id, op) == 0:
            raise NotFound(f"agent {agent.id!r} not found")
        return agent

    async def delete(self, agent_id: str, tenant: str) -> None:
        if agent_id == DEFAULT_ID:
            raise Conflict("the built-in default agent cannot be deleted")

        def op(conn: sqlite3.Connection) -> int:
            mine = conn.execute(
                "SELECT 1 FROM agents WHERE id = ? AND tenant = ?", (agent_id, tenant)
            ).fetchone()
            if mine is None:
                return 0
            used = conn.execute(
                "SELECT COUNT(*) FROM sessions WHERE agent_id = ?", (agent_id,)
            ).fetchone()[0]
            if used:
                raise Conflict(
                    f"agent {agent_id!r} is used by {used} session(s); move or delete them first"
                )
            return conn.execute(
                "DELETE FROM agents WHERE id = ? AND tenant = ?", (agent_id, tenant)
            ).rowcount

        if await self._write(agent_id, op) == 0:
            raise NotFound(f"agent {agent_id!r} not found")

    async def ensure_default(self, agent: Agent) -> Agent:
        """Create the built-in agent, or refresh it while the server still manages it."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO agents ({_COLUMNS}, auto) VALUES ({_PLACES}, 1) "
                "ON CONFLICT (id) DO UPDATE SET provider = excluded.provider, "
                "model = excluded.model, options = excluded.options, "
                "updated_at = excluded.updated_at WHERE agents.auto = 1 AND "
                "(agents.provider, coalesce(agents.model, ''), agents.options) IS NOT "
                "(excluded.provider, coalesce(excluded.model, ''), excluded.options)",
                (agent.id, *_values(agent)[:-1], agent.created_at, agent.updated_at),
            )

        await self._write(agent.id, op)
        return await self.get(agent.id, None)
