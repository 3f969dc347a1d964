"""The database: one writer thread that group-commits, and aiosqlite readers.

Every write goes through `Database.write(op)`: `op` is a plain function of a sqlite3
connection, queued and run on the writer thread. The writer takes everything queued since
its last commit -- operations from any number of concurrent runs and requests, plus the
buffered event-log rows -- and applies it in one `BEGIN IMMEDIATE … COMMIT`, each operation
inside its own SAVEPOINT so that one failing operation cannot undo another (statements an
operation `defer`s run after the last one, in the same transaction). A whole batch
costs one thread hop and one commit, where aiosqlite would cost a hop per statement and a
commit per row (bench turns, bench writes).

Event-log rows (`append_events`) need no await: they ride along with the next commit, and
when only events are waiting the writer lets them gather for `event_flush_s` first. A step's
events are always buffered before the operation that persists the step, so they commit with
it or before it.

`event_flush_s` (default 0.2 s) trades durability for commits: it is the most a crash of the
process can lose of a step still streaming (never anything of a completed step), and a run
streaming alone costs a commit per interval, while fast or concurrent streams share their
commits anyway (bench writes: "paced stream", "100 paced streams").

A commit's results are handed back a slice at a time, one slice per turn of the event loop:
each settled future wakes a task that runs until its next await, so a thousand runs whose
starts share a commit, woken in one turn, would hold every timer and socket of the loop while
they start, and every stream already flowing would wait for all of them. The slice follows how
long the loop's last turn took: half as many after a turn over `TURN_BUSY_S`, one more after a
turn under `TURN_QUIET_S`, from one to `SETTLE_MAX`; runs that start together then start a
little later each, fewer to a turn the busier the loop is (bench many: p99 delivery lag).

Reads use aiosqlite connections of their own; under WAL they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from server.errors import ApiError, StoreError
from server.events import EventRow
from server.meter import Meter
from server.store import eventlog
from server.store.contract import EventBatch

log = logging.getLogger("sessiond.store")
T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"
_STEP = re.compile(r"^-- step (\d+):", re.MULTILINE)
SETTLE_MAX = 16  # results handed back in one turn of the event loop, at most
TURN_BUSY_S = 0.004  # a turn of the loop longer than this: the next slice is half as big
TURN_QUIET_S = 0.002  # shorter than this: one more


def schema_steps(text: str) -> list[tuple[int, str]]:
    """Split schema.sql into its numbered steps, in order."""
    marks = list(_STEP.finditer(text))
    steps = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        steps.append((int(mark.group(1)), text[mark.start() : end]))
    numbers = [n for n, _ in steps]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"schema.sql steps must be numbered 1, 2, 3…; found {numbers}")
    return steps


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


class WriterConnection(sqlite3.Connection):
    """The writer's connection. It also holds the statements operations `defer` to the end
    of the commit they are part of."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: list[tuple[str, tuple[Any, ...]]] = []


def defer(conn: sqlite3.Connection, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Run `sql` for each row once every operation of this commit has been applied, in the
    same transaction (so it commits, or rolls back, with them). The rows of an operation that
    fails are dropped with it. This is for FTS5: it writes its pending index to disk at every
    SAVEPOINT of a transaction it is part of, so indexing inside each operation would write a
    new index segment per message (bench turns). On any other connection the statement runs at
    once."""
    if isinstance(conn, WriterConnection):
        conn.deferred.extend((sql, row) for row in rows)
    else:
        conn.executemany(sql, rows)


def _run_deferred(conn: WriterConnection) -> None:
    deferred, conn.deferred = conn.deferred, []
    for sql, group in itertools.groupby(deferred, key=lambda item: item[0]):
        conn.executemany(sql, [row for _, row in group])


def _connect_writer(path: str) -> WriterConnection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=WriterConnection
    )
    _configure(conn)
    return conn


def _migrate(conn: sqlite3.Connection, steps: Sequence[tuple[int, str]]) -> int:
    current: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(steps):
        raise RuntimeError(
            f"the database is at schema step {current}, newer than this server's "
            f"{len(steps)}: upgrade sessiond"
        )
    # A step may make a table again (create the new one, copy, drop the old, rename): with
    # foreign keys on, dropping a table deletes the rows that refer to it. They are off while
    # the steps run, and checked before each commits.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for number, sql in steps[current:]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    conn.execute(statement)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"schema step {number} breaks foreign keys: {broken[:5]}")
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("applied schema step %d", number)
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    return len(steps)


def _statements(sql: str) -> Iterable[str]:
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buffer.strip():
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise RuntimeError(f"incomplete SQL statement in schema.sql: {buffer.strip()[:80]}")


class _Pending:
    __slots__ = ("future", "op")

    def __init__(self, op: Op, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.future = future


class Database:
    def __init__(
        self,
        path: str,
        *,
        event_flush_s: float = 0.2,
        readers: int = 2,
        meter: Meter | None = None,
    ) -> None:
        self.path = path
        self.meter = meter or Meter()
        self.event_flush_s = event_flush_s
        self._reader_count = readers
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessiond-writer")
        self._writer: WriterConnection | None = None
        self._ops: list[_Pending] = []
        self._later: list[_Pending] = []  # ops that wait for a commit like event rows do
        self._events = EventBatch()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settling: deque[tuple[asyncio.Future[Any], Any]] = deque()
        self._slice = SETTLE_MAX  # results the next slice hands back
        self._sliced: float | None = None  # when the last slice was handed back, if more wait
        self._closing = False
        self.commits = 0

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._thread, _connect_writer, self.path)
        steps = schema_steps(SCHEMA_PATH.read_text())
        await loop.run_in_executor(self._thread, _migrate, self._writer, steps)
        for _ in range(self._reader_count):
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            reader.row_factory = sqlite3.Row
            await reader.execute("PRAGMA foreign_keys=ON")
            await reader.execute("PRAGMA busy_timeout=5000")
            await reader.execute("PRAGMA query_only=ON")
            self._readers.append(reader)
        self._task = asyncio.create_task(self._write_loop(), name="sessiond-writer")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        while self._settling:
            _settle(*self._settling.popleft())
        for reader in self._readers:
            await reader.close()
        self._readers.clear()
        if self._writer is not None:
            writer = self._writer
            await asyncio.get_running_loop().run_in_executor(self._thread, writer.close)
        self._thread.shutdown(wait=True)

    # -- writes ---------------------------------------------------------------------------
    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(op)

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `op` now (its place in the commit order is fixed on return); await the
        future for its result."""
        if self._closing:
            raise StoreError("the database is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._ops.append(_Pending(op, future))
        self._wake.set()
        return future

    def submit_later(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `op` to commit with the next commit, like an event-log row: at most
        `event_flush_s` from now, without starting a commit of its own. For what may lag a
        little (a step's input usage as it starts), where a commit of its own could hold up
        the write that a run waits on next."""
        if self._closing:
            raise StoreError("the database is closing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._later.append(_Pending(op, future))
        self._wake.set()  # the writer sleeps until the flush time unless a real op comes
        return future

    def withdraw(self, future: asyncio.Future[Any]) -> bool:
        """Take back an op queued with `submit_later` if the writer has not taken it yet (its
        future is then cancelled): its change can go into the write about to be made."""
        for i, pending in enumerate(self._later):
            if pending.future is future:
                del self._later[i]
                future.cancel()
                return True
        return False

    def append_events(self, rows: Iterable[EventRow]) -> EventBatch:
        """Buffer rows for the next commit; the batch they joined says when that has happened."""
        batch = self._events
        if not batch.rows:  # else the writer has been woken for the first of them
            self._wake.set()
        batch.rows.extend(rows)
        return batch

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self.write(lambda conn: None)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = 0.0
        while True:
            await self._wake.wait()
            if not self._ops and not self._closing:
                wait = last_commit + self.event_flush_s - time.monotonic()
                if wait > 0:
                    await self._sleep_unless_op(wait)
            self._wake.clear()
            ops, self._ops, self._later = [*self._later, *self._ops], [], []
            batch, self._events = self._events, EventBatch()
            if ops or batch.rows:
                events = await _built(batch.rows)
                results = await loop.run_in_executor(self._thread, self._apply, ops, batch, events)
                last_commit = time.monotonic()
                self._hand_back([p.future for p in ops], results)
            if self._closing and not self._ops and not self._later and not self._events.rows:
                return

    def _hand_back(self, futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
        """Settle a commit's futures in order, after any still waiting from earlier commits."""
        idle = not self._settling
        self._settling.extend(zip(futures, results, strict=True))
        if idle:
            self._settle_slice()

    def _settle_slice(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._sliced is not None:  # a turn of the loop since the last slice: how long?
            turn = now - self._sliced
            if turn > TURN_BUSY_S:
                self._slice = max(1, self._slice // 2)
            elif turn < TURN_QUIET_S:
                self._slice = min(SETTLE_MAX, self._slice + 1)
        settling = self._settling
        for _ in range(min(self._slice, len(settling))):
            _settle(*settling.popleft())
        self._sliced = now if settling else None
        if settling:
            loop.call_soon(self._settle_slice)

    async def _sleep_unless_op(self, seconds: float) -> None:
        """Let events gather, but wake at once for a real operation."""
        deadline = time.monotonic() + seconds
        while not self._ops and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _apply(
        self, ops: list[_Pending], batch: EventBatch, events: list[eventlog.Statement]
    ) -> list[Any]:
        conn = self._writer
        assert conn is not None
        results: list[Any] = []
        began, cpu, changes = time.perf_counter(), time.thread_time(), conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            eventlog.write(conn, events)
            for pending in ops:
                results.append(_run_op(conn, pending.op))
            _run_deferred(conn)
            conn.execute("COMMIT")
            self.commits += 1
            took, used = time.perf_counter() - began, time.thread_time() - cpu
            self.meter.committed(took, conn.total_changes - changes, used)
            batch.rows, batch.committed = [], True
        except sqlite3.Error as exc:
            conn.deferred = []
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.error("commit failed: %s", exc)
            error = StoreError(f"database write failed: {exc}")
            return [error for _ in ops]
        return results

    # -- reads ----------------------------------------------------------------------------
    def reader(self) -> aiosqlite.Connection:
        reader = self._readers[self._next_reader % len(self._readers)]
        self._next_reader += 1
        return reader

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            rows = await self.reader().execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc
        return list(rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


def _run_op(conn: WriterConnection, op: Op) -> Any:
    conn.execute("SAVEPOINT op")
    deferred = len(conn.deferred)
    try:
        result = op(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        del conn.deferred[deferred:]
        return _as_error(exc)
    conn.execute("RELEASE op")
    return result


def _as_error(exc: Exception) -> BaseException:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, sqlite3.Error):
        wrapped = StoreError(f"database write failed: {exc}")
        wrapped.__cause__ = exc
        return wrapped
    return exc


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _built(rows: list[EventRow]) -> list[eventlog.Statement]:
    """The event log's statements for a commit's rows, with a turn of the event loop after
    each when there may be more than one: built at once, a commit of a thousand runs' events
    would hold the loop for milliseconds while streams are due (bench many)."""
    statements = eventlog.statements(rows)
    if len(rows) <= eventlog.INSERT_ROWS:  # one statement at most: no turn to give
        return list(statements)
    built: list[eventlog.Statement] = []
    for statement in statements:
        built.append(statement)
        await asyncio.sleep(0)
    return built
