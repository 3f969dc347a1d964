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
import math
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
INLINE_BYTES = 8192  # bytes values a statement held back may carry, written in hex
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


class HeldCursor:
    """The cursor of a statement held back to be sent with others: no rows, and a rowcount
    that sends it (with what was held before it) when it is asked for."""

    __slots__ = ("_count", "_pg")

    def __init__(self, pg: PgConnection) -> None:
        self._pg = pg
        self._count: int | None = None

    @property
    def rowcount(self) -> int:
        if self._count is None:
            self._count = self._pg.send_through(self)
        return self._count

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []


class Unsent(Exception):
    """Statements held back failed when they were sent: which operation's, nobody knows here
    (deliberately not an `sqlite3.Error`, which an operation could take for its own)."""


class PgConnection:
    """An asyncpg connection, driven from the writer thread as a sqlite3 one would be.

    Each call is a round trip to the server, and a turn of the writer thread's own event loop.
    With `holding` on (the writer's commits), a statement whose rows nobody reads (an insert,
    an update without RETURNING) is held back and sent with the next one that returns rows, or
    with the COMMIT: several statements, their values written into the text as literals, in
    one simple query. A statement that returns rows is sent as a prepared one, as before."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: asyncpg.Connection) -> None:
        self.loop = loop
        self.conn = conn
        self.holding = False
        self.held: list[tuple[str, HeldCursor | None]] = []
        self.written: set[tuple[str, str]] = set()  # (table, column) held statements write
        self.named: set[str] = set()  # the tables held statements name
        self.began: bool | None = None  # a transaction held (False) or sent (True)
        self.trips = 0  # round trips made, for the tests and the curious
        self.status = ""  # the command tag of the last statement sent with others

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        self.trips += 1
        return self.loop.run_until_complete(step)

    def cursor(self) -> PgConnection:
        """A module's own cursor is the connection itself here: asyncpg's records read by
        name and by index as sqlite3.Row does, whatever `row_factory` it then sets."""
        return self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor | HeldCursor:
        statement = translate(sql)
        if _RETURNS_ROWS.search(statement):
            if self.held and not self._may_pass(statement):
                self.send()
            try:
                rows = self.run(self.conn.fetch(statement, *params))
            except asyncpg.PostgresError as exc:
                raise _as_sqlite_error(exc) from exc
            return PgCursor(rows, len(rows))
        if self.holding:
            text = inline(statement, params)
            if text is not None:
                cursor = HeldCursor(self)
                self.held.append((text, cursor))
                named, writes, _ = _shape(statement)
                self.named |= named
                self.written |= writes
                return cursor
            self.send()
        try:
            status = self.run(self.conn.execute(statement, *params))
        except asyncpg.PostgresError as exc:
            raise _as_sqlite_error(exc) from exc
        return PgCursor([], _count(status))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        args = [tuple(row) for row in rows]
        if len(args) == 1 or (self.holding and args):  # one row: a plain statement is cheaper
            for row in args:
                self.execute(sql, row)
        elif args:
            try:
                self.run(self.conn.executemany(translate(sql), args))
            except asyncpg.PostgresError as exc:
                raise _as_sqlite_error(exc) from exc
        return PgCursor([], len(args))

    def _may_pass(self, statement: str) -> bool:
        """Whether a statement that returns rows may go before what is held: inside a
        transaction already begun, reading no column a held statement writes (a held insert:
        any of its table's), and writing no table a held statement names, it has the same
        effect and rows either way, and so have they (the schema has no triggers; a failure
        anywhere makes the commit again, each statement in its turn)."""
        if self.began is not True:
            return False
        named, writes, words = _shape(statement)
        for table, column in self.written:
            if table == "*":
                return False
            if table in named and (column == "*" or column in words or "*" in words):
                return False
        return all(table != "*" and table not in self.named for table, _ in writes)

    def hold(self, text: str) -> None:
        """A statement (its values in it, writing no table) to go with the next ones sent."""
        self.held.append((text, None))
        if text == "BEGIN":
            self.began = False

    def send(self, last: str | None = None) -> None:
        """Everything held back, and `last` after it, in one round trip."""
        if last is not None:
            self.held.append((last, None))
        if self.held:
            self._send(len(self.held))

    def send_through(self, cursor: HeldCursor) -> int:
        """What is held up to `cursor`'s statement, which comes last: its rowcount."""
        for i, (_, held) in enumerate(self.held):
            if held is cursor:
                return self._send(i + 1)
        raise RuntimeError("the statement was sent already")  # its count was kept then

    def _send(self, upto: int) -> int:
        texts = [text for text, _ in self.held[:upto]]
        del self.held[:upto]
        if not self.held:
            self.written.clear()
            self.named.clear()
        if self.began is False:
            self.began = True
        try:
            status = self.run(self.conn.execute(";\n".join(texts)))
        except (asyncpg.PostgresError, sqlite3.Error) as exc:
            self.held.clear()
            raise Unsent(str(exc)) from exc
        self.status = status
        return _count(status)

    def drop_held(self) -> None:
        self.held.clear()
        self.written.clear()
        self.named.clear()
        self.began = None


_NAMED = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+(\w+)", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_UPDATE = re.compile(r"^\s*UPDATE\s+(\w+)\s+SET\s", re.IGNORECASE)
_SET_COLUMN = re.compile(r"(?:\bSET|,)\s*(\w+)\s*=", re.IGNORECASE)
_WORD = re.compile(r"\w+|\*")
_DERIVED = frozenset({"message_search"})  # tables with generated columns: any change is all
Shape = tuple[frozenset[str], frozenset[tuple[str, str]], frozenset[str]]


@functools.lru_cache(maxsize=4096)
def _shape(statement: str) -> Shape:
    """What a statement touches: the tables it names, the (table, column) pairs it may write
    ("*" for every column, ("*", "*") for anything: a DELETE cascades), and its words (the
    columns it may read among them, and "*" if it has one)."""
    named = frozenset(name.lower() for name in _NAMED.findall(statement))
    words = frozenset(word.lower() for word in _WORD.findall(statement))
    writes: frozenset[tuple[str, str]] = frozenset()
    if inserted := _INSERT.match(statement):
        writes = frozenset({(inserted.group(1).lower(), "*")})
    elif updated := _UPDATE.match(statement):
        table = updated.group(1).lower()
        if "SET (" in statement.upper() or table in _DERIVED:
            writes = frozenset({(table, "*")})
        else:  # every `column =` of the statement: more than it sets, never fewer
            columns = _SET_COLUMN.findall(statement)
            writes = frozenset((table, column.lower()) for column in columns)
    elif re.search(r"\b(DELETE|TRUNCATE|ALTER|DROP|CREATE)\b", statement, re.IGNORECASE):
        writes = frozenset({("*", "*")})
    return named, writes, words


def _count(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


_PLACE = re.compile(r"'(?:[^']|'')*'|\$\d+")


@functools.lru_cache(maxsize=4096)
def _pieces(statement: str) -> tuple[str, ...]:
    """A translated statement cut at its placeholders ($1, $2… in order, each used once)."""
    pieces, at = [], 0
    for match in _PLACE.finditer(statement):
        if match.group(0).startswith("$"):
            pieces.append(statement[at : match.start()])
            at = match.end()
    pieces.append(statement[at:])
    return tuple(pieces)


def inline(statement: str, params: Sequence[Any]) -> str | None:
    """The statement with its values written in as literals (None: a value that has no
    literal here, so the statement goes on its own with its parameters). Strings are quoted
    as standard SQL (quotes doubled; the connection has standard_conforming_strings on, so a
    backslash is itself); bytes as hex, up to INLINE_BYTES a statement: a commit of a
    thousand streams' event chunks goes as it is, with its parameters (bench scale)."""
    pieces = _pieces(statement)
    if len(pieces) != len(params) + 1:
        return None
    out = [pieces[0]]
    room = INLINE_BYTES
    for value, piece in zip(params, pieces[1:], strict=True):
        if type(value) is bytes:
            room -= len(value)
            if room < 0:
                return None
            literal: str | None = "'\\x" + value.hex() + "'::bytea"
        else:
            literal = _literal(value)
        if literal is None:
            return None
        out.append(literal)
        out.append(piece)
    return "".join(out)


def _literal(value: Any) -> str | None:
    if value is None:
        return "NULL"
    kind = type(value)
    if kind is str:
        return "'" + value.replace("'", "''") + "'" if "\x00" not in value else None
    if kind is int or kind is bool:  # (a bool as SQLite keeps it: no column is boolean)
        return str(int(value)) if value >= 0 else f"({int(value)})"  # `- -1` would be `--`
    if kind is float:
        if not math.isfinite(value):
            return None
        return repr(value) if value >= 0 else f"({value!r})"
    return None


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
        return await asyncpg.connect(
            url,
            statement_cache_size=STATEMENTS,
            server_settings={"standard_conforming_strings": "on"},  # what `inline` quotes for
        )
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

    @property
    def round_trips(self) -> int:
        """Round trips the writer has made to the server so far."""
        return self._pg.trips if self._pg is not None else 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._pg = await loop.run_in_executor(self._thread, self._connect_writer)
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self._reader_count, reset=_kept_as_is
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
        """One transaction. Without savepoints, statements whose results nobody reads are held
        back and sent together (BEGIN with the first of them, the last with COMMIT): a commit
        costs a round trip, and one more for each statement that returns rows, with what was
        held before it. With a savepoint per operation, each statement goes on its own, so
        that a failure is the operation's own, raised where the operation can see it."""
        conn = cast(sqlite3.Connection, pg)  # it has what the operations use of one
        results: list[Any] = []
        pg.holding = not isolated
        try:
            if isolated:
                pg.run(pg.conn.execute("BEGIN"))
            else:
                pg.hold("BEGIN")
            for sql, values in events:
                pg.execute(sql, values)
            if batch.rows:  # heard by the other processes once this commits
                last = {row[0]: row[1] for row in batch.rows}
                for payload in announcements(self.me, last):
                    pg.hold(f"SELECT pg_notify('{EVENTS}', {_literal(payload)})")
            for pending in ops:
                if isolated:
                    results.append(_run_op(pg, conn, pending.op))
                    continue
                try:
                    results.append(pending.op(conn))
                except Exception as exc:
                    raise _OpFailed from exc
            # a transaction an error aborted ends in a ROLLBACK, however it is asked to end
            if isolated:
                if pg.run(pg.conn.execute("COMMIT")) != "COMMIT":
                    raise sqlite3.OperationalError("the transaction was rolled back")
            else:
                try:
                    pg.send("COMMIT")
                except Unsent as exc:
                    raise _OpFailed from exc
                pg.began = None
                if pg.status != "COMMIT":  # an operation swallowed a refusal: each in turn
                    raise _OpFailed
        except BaseException:
            pg.drop_held()
            pg.run(pg.conn.execute("ROLLBACK"))
            raise
        finally:
            pg.holding = False
        return results

    # -- reads ------------------------------------------------------------------------------
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        assert self._pool is not None
        try:
            return list(await self._pool.fetch(translate(sql), *params))
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"database read failed: {exc}") from exc


async def _kept_as_is(conn: asyncpg.Connection) -> None:
    """A reader goes back to the pool as it is: reads change nothing of a connection's
    session (no settings, locks or listeners), so the reset query asyncpg would send on each
    release, a round trip per read, has nothing to undo."""


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
