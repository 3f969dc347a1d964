"""The database on PostgreSQL, through asyncpg: the same writer and reads as `sqlite.py`.

`PgDatabase` is `Database` with another connection under it. Its writer is the same loop
(everything queued since the last commit, plus the buffered event-log rows, in one
transaction, each operation in its own SAVEPOINT), on the same one thread: there it holds an
asyncpg connection on an event loop of that thread's own, and hands each operation a
`PgConnection`, which has the few methods of `sqlite3.Connection` the operations use
(`execute`, `executemany`, a cursor's `fetchone`, `fetchall` and `rowcount`). So the table
modules keep one body of code for both databases; their SQL is written for SQLite and
`translate` turns it into PostgreSQL's (placeholders, `INSERT OR IGNORE`, `IS` between values,
the few functions that differ), and a constraint PostgreSQL refuses is raised as the
`sqlite3.IntegrityError` SQLite's message would be, which is what the modules catch. Reads
go through a pool of asyncpg connections on the server's own loop.

The schema is `schema.pg.sql`, step for step `schema.sql`'s; the number of the last step
applied is kept in `schema_step`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg

from server.errors import StoreError
from server.meter import Meter
from server.store.contract import EventBatch
from server.store.eventlog import Statement
from server.store.pgcluster import EVENTS, PgCluster, announcements
from server.store.pgsearch import PgSearch
from server.store.sqlite import Database, schema_steps
from server.store.tables import SqliteStore

log = logging.getLogger("sessiond.store")

PG_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.pg.sql"
MIGRATE_LOCK = 0x5E55_10D0  # the advisory lock migrations take
STATEMENTS = 1024  # prepared statements a connection keeps: the event log alone has 128
T = TypeVar("T")


# -- the dialect ----------------------------------------------------------------------------

# Whole pieces of SQLite SQL the table modules use, and what PostgreSQL says for them.
_PIECES = (
    (  # sessions.TOUCH_EXPIRY: now + ttl, as an RFC 3339 string with milliseconds
        "strftime('%Y-%m-%dT%H:%M:%fZ', ?, '+' || ttl_seconds || ' seconds')",
        "sessiond_plus_seconds(?, ttl_seconds)",
    ),
    (  # runs: a tool call appended to the run's list
        "json_insert(tool_calls, '$[#]', json(?))",
        "(tool_calls::jsonb || jsonb_build_array((?::text)::jsonb))::text",
    ),
    (  # sessions: a tag filter
        "json_each(sessions.tags) WHERE value = ?",
        "jsonb_array_elements_text(sessions.tags::jsonb) AS tag (value) WHERE value = ?",
    ),
    (  # searchindex: a new message's searchable text
        "INSERT INTO message_search (rowid, text, session_id) "
        "SELECT rowid, ?, session_id FROM messages WHERE id = ?",
        "INSERT INTO message_search (message_id, text, session_id) "
        "SELECT id, ?, session_id FROM messages WHERE id = ?",
    ),
)
_LITERAL_OR_MARK = re.compile(r"'(?:[^']|'')*'|\?")
_IS_VALUE = re.compile(r"\bIS \?")
_MARK_IS_NULL = re.compile(r"\? IS (NOT )?NULL")  # a parameter alone has no type: it is text here
_IS_NOT_ROW = re.compile(r"\bIS NOT \(")


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """SQLite's SQL as the table modules write it, in PostgreSQL's dialect."""
    for sqlite_piece, pg_piece in _PIECES:
        sql = sql.replace(sqlite_piece, pg_piece)
    sql = _IS_VALUE.sub("IS NOT DISTINCT FROM ?", sql)
    sql = _MARK_IS_NULL.sub(lambda m: f"?::text IS {m.group(1) or ''}NULL", sql)
    sql = _IS_NOT_ROW.sub("IS DISTINCT FROM (", sql)
    if sql.startswith("INSERT OR IGNORE INTO"):
        sql = "INSERT INTO" + sql[len("INSERT OR IGNORE INTO") :] + " ON CONFLICT DO NOTHING"
    numbers = iter(range(1, 65536))

    def mark(match: re.Match[str]) -> str:
        text = match.group(0)
        return f"${next(numbers)}" if text == "?" else text

    return _LITERAL_OR_MARK.sub(mark, sql)


_RETURNS_ROWS = re.compile(r"^\s*(SELECT|WITH|VALUES)\b|\bRETURNING\b", re.IGNORECASE)
_KEY_COLUMNS = re.compile(r"Key \(([^)]*)\)")


def _as_sqlite_error(exc: asyncpg.PostgresError) -> sqlite3.Error:
    """A refusal in the words SQLite uses for it, which the table modules look for."""
    table = getattr(exc, "table_name", None) or "?"
    if isinstance(exc, asyncpg.UniqueViolationError):
        found = _KEY_COLUMNS.search(getattr(exc, "detail", None) or "")
        columns = [c.strip() for c in found.group(1).split(",")] if found else ["?"]
        named = ", ".join(f"{table}.{column}" for column in columns)
        return sqlite3.IntegrityError(f"UNIQUE constraint failed: {named}")
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return sqlite3.IntegrityError("FOREIGN KEY constraint failed")
    if isinstance(exc, asyncpg.NotNullViolationError):
        column = getattr(exc, "column_name", None) or "?"
        return sqlite3.IntegrityError(f"NOT NULL constraint failed: {table}.{column}")
    if isinstance(exc, asyncpg.CheckViolationError):
        return sqlite3.IntegrityError(f"CHECK constraint failed: {exc}")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sqlite3.IntegrityError(str(exc))
    return sqlite3.OperationalError(str(exc))


class PgCursor:
    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows


class PgConnection:
    """An asyncpg connection, driven from the writer thread as a sqlite3 one would be."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: asyncpg.Connection) -> None:
        self.loop = loop
        self.conn = conn

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)

    def cursor(self) -> PgConnection:
        """A module's own cursor is the connection itself here: asyncpg's records read by
        name and by index as sqlite3.Row does, whatever `row_factory` it then sets."""
        return self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        statement = translate(sql)
        try:
            if _RETURNS_ROWS.search(statement):
                rows = self.run(self.conn.fetch(statement, *params))
                return PgCursor(rows, len(rows))
            status = self.run(self.conn.execute(statement, *params))
        except asyncpg.PostgresError as exc:
            raise _as_sqlite_error(exc) from exc
        last = status.rsplit(" ", 1)[-1]
        return PgCursor([], int(last) if last.isdigit() else -1)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        args = [tuple(row) for row in rows]
        if len(args) == 1:  # one row: a plain statement costs less than asyncpg's batch
            return self.execute(sql, args[0])
        if args:
            try:
                self.run(self.conn.executemany(translate(sql), args))
            except asyncpg.PostgresError as exc:
                raise _as_sqlite_error(exc) from exc
        return PgCursor([], len(args))


# -- the schema -----------------------------------------------------------------------------


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply schema.pg.sql's steps the database lacks; the number of the last one."""
    steps = schema_steps(PG_SCHEMA_PATH.read_text())
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_step (step BIGINT NOT NULL)")
        current = await conn.fetchval("SELECT max(step) FROM schema_step") or 0
        if current > len(steps):
            raise RuntimeError(
                f"the database is at schema step {current}, newer than this server's "
                f"{len(steps)}: upgrade sessiond"
            )
        for number, sql in steps[current:]:
            code = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
            async with conn.transaction():  # a savepoint: a step whole or not at all
                if "".join(code).strip():  # a step may have nothing to do on PostgreSQL
                    await conn.execute(sql)
                await conn.execute("INSERT INTO schema_step (step) VALUES ($1)", number)
            log.info("applied schema step %d", number)
    return len(steps)


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, statement_cache_size=STATEMENTS)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc


# -- the database ---------------------------------------------------------------------------


class PgDatabase(Database):
    def __init__(
        self,
        url: str,
        *,
        event_flush_s: float = 0.2,
        readers: int = 4,
        meter: Meter | None = None,
    ) -> None:
        super().__init__(url, event_flush_s=event_flush_s, readers=readers, meter=meter)
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._pg: PgConnection | None = None
        self.me = secrets.token_hex(6)  # this process, in what it announces

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._pg = await loop.run_in_executor(self._thread, self._connect_writer)
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self._reader_count
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to the database: {exc}") from exc
        self._task = asyncio.create_task(self._write_loop(), name="sessiond-writer")

    def _connect_writer(self) -> PgConnection:
        self._writer_loop = asyncio.new_event_loop()
        conn = self._writer_loop.run_until_complete(connect(self.url))
        pg = PgConnection(self._writer_loop, conn)
        pg.run(migrate(conn))
        return pg

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        while self._settling:
            settling = self._settling.popleft()
            if not settling[0].done():
                if isinstance(settling[1], BaseException):
                    settling[0].set_exception(settling[1])
                else:
                    settling[0].set_result(settling[1])
        if self._pool is not None:
            await self._pool.close()
        if self._pg is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close_writer)
        self._thread.shutdown(wait=True)

    def _close_writer(self) -> None:
        assert self._pg is not None and self._writer_loop is not None
        self._pg.run(self._pg.conn.close())
        self._writer_loop.close()

    def _apply(self, ops: list[Any], batch: EventBatch, events: list[Statement]) -> list[Any]:
        """The commit: first with no savepoints (each costs two round trips to the server);
        if an operation fails, the transaction is rolled back and made again with each
        operation in a savepoint of its own, so that one failing undoes only itself."""
        pg = self._pg
        assert pg is not None
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            try:
                results = self._transaction(pg, ops, batch, events, isolated=False)
            except _OpFailed:
                results = self._transaction(pg, ops, batch, events, isolated=True)
            self.commits += 1
            took, used = time.perf_counter() - began, time.thread_time() - cpu
            self.meter.committed(took, len(ops) + len(batch.rows), used)
            batch.rows, batch.committed = [], True
        except (sqlite3.Error, asyncpg.PostgresError, OSError) as exc:
            log.error("commit failed: %s", exc)
            error = StoreError(f"database write failed: {exc}")
            return [error for _ in ops]
        return results

    def _transaction(
        self,
        pg: PgConnection,
        ops: list[Any],
        batch: EventBatch,
        events: list[Statement],
        *,
        isolated: bool,
    ) -> list[Any]:
        conn = cast(sqlite3.Connection, pg)  # it has what the operations use of one
        results: list[Any] = []
        pg.run(pg.conn.execute("BEGIN"))
        try:
            for sql, values in events:
                pg.execute(sql, values)
            if batch.rows:  # heard by the other processes once this commits
                last = {row[0]: row[1] for row in batch.rows}
                for payload in announcements(self.me, last):
                    pg.execute("SELECT pg_notify(?, ?)", (EVENTS, payload))
            for pending in ops:
                if isolated:
                    results.append(_run_op(pg, conn, pending.op))
                    continue
                try:
                    results.append(pending.op(conn))
                except Exception as exc:
                    raise _OpFailed from exc
            pg.run(pg.conn.execute("COMMIT"))
        except BaseException:
            pg.run(pg.conn.execute("ROLLBACK"))
            raise
        return results

    # -- reads ------------------------------------------------------------------------------
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._pool is not None
        try:
            return list(await self._pool.fetch(translate(sql), *params))
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database read failed: {exc}") from exc


class _OpFailed(Exception):
    """An operation failed in a commit made without savepoints."""


def _run_op(pg: PgConnection, conn: sqlite3.Connection, op: Any) -> Any:
    pg.run(pg.conn.execute("SAVEPOINT op"))
    try:
        result = op(conn)
    except Exception as exc:
        pg.run(pg.conn.execute("ROLLBACK TO SAVEPOINT op"))
        pg.run(pg.conn.execute("RELEASE SAVEPOINT op"))
        if isinstance(exc, sqlite3.Error | asyncpg.PostgresError):
            wrapped = StoreError(f"database write failed: {exc}")
            wrapped.__cause__ = exc
            return wrapped
        return exc
    pg.run(pg.conn.execute("RELEASE SAVEPOINT op"))
    return result


class PgStore(SqliteStore):
    """The store on a PostgreSQL database (`url`: postgresql://user@host:port/name), shared
    with other processes (`cluster`, pgcluster.py)."""

    def __init__(
        self,
        url: str,
        *,
        event_flush_s: float = 0.2,
        meter: Meter | None = None,
        lease_timeout_s: float = 15.0,
    ) -> None:
        self.db = db = PgDatabase(url, event_flush_s=event_flush_s, meter=meter)
        self._parts(db)
        self.search = PgSearch(db)
        self.cluster = PgCluster(url, db.me, lease_timeout_s)

    async def close(self) -> None:
        await self.db.close()
        await self.cluster.close()
