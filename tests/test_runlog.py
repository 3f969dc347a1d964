"""A run's live log alone: batches for followers, bursts gathered, committed rows dropped from
memory, and followers reading on from the database with no gap and no duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest

from server.errors import StoreError
from server.events import EventRow, TextDelta
from server.runs.channel import Hub
from server.runs.followers import Followers
from server.runs.runlog import TAIL, TRIM_EVERY, WINDOW, RunLog
from server.runs.signals import Quiet
from server.runs.table import LiveRuns
from server.store import EventBatch, SqliteStore
from tests.waiting import until


class Batches:
    """A stand-in for the write buffer: one batch at a time, committed when told."""

    def __init__(self) -> None:
        self.current = EventBatch()
        self.all = [self.current]

    def __call__(self, rows: Iterable[EventRow]) -> EventBatch:
        self.current.rows.extend(rows)
        return self.current

    def commit(self) -> None:
        for batch in self.all:
            batch.committed = True
        self.current = EventBatch()
        self.all.append(self.current)


def runlog(sink: Batches | None = None) -> RunLog:
    return RunLog("r", "s", 1, sink or Batches(), lambda session_id, row: None)


def delta(i: int) -> TextDelta:
    return TextDelta(f"w{i} ", 0)


def test_wait_returns_rows_then_pings_then_none_at_the_end() -> None:
    async def go() -> None:
        log = runlog()
        quiet = Quiet(0.05)
        assert await log.wait(0, quiet) == []  # quiet: a ping
        log.emit(delta(1))
        rows = await log.wait(0, quiet)
        assert rows is not None and [r[1] for r in rows] == [1]
        log.finish()
        assert await log.wait(1, quiet) is None
        quiet.close()

    asyncio.run(go())


def test_a_burst_reaches_a_follower_in_one_batch_and_a_paced_run_at_once() -> None:
    async def go() -> None:
        log = runlog()
        quiet = Quiet(5)

        async def burst() -> None:
            for tick in range(10):
                for i in range(64):
                    log.emit(delta(tick * 64 + i))
                await asyncio.sleep(0)

        producer = asyncio.create_task(burst())
        rows = await log.wait(0, quiet)
        assert rows is not None and len(rows) == 640
        await producer

        paced = asyncio.get_running_loop().call_later(0.01, log.emit, delta(0))
        rows = await log.wait(640, quiet)
        assert rows is not None and [r[1] for r in rows] == [641]
        paced.cancel()
        quiet.close()

    asyncio.run(go())


def test_committed_rows_beyond_the_tail_leave_memory() -> None:
    batches = Batches()
    log = runlog(batches)
    for i in range(TAIL + 3 * TRIM_EVERY):
        log.emit(delta(i))
    assert log.base == 0  # nothing committed yet: everything stays
    batches.commit()
    durable = log.last_seq
    for i in range(3 * TRIM_EVERY):
        log.emit(delta(i))
    assert log.base == durable  # not beyond: the newer rows are not committed yet
    assert [r[1] for r in log.rows] == list(range(log.base + 1, log.last_seq + 1))
    assert log.since(log.base - 5)[0][1] == log.base + 1  # the caller sees the gap
    batches.commit()
    for i in range(TRIM_EVERY):
        log.emit(delta(i))
    assert log.last_seq - TAIL - TRIM_EVERY <= log.base <= log.last_seq - TAIL


def test_a_run_that_writes_nothing_keeps_every_row() -> None:
    log = RunLog("r", "s", 1, lambda rows: None, lambda session_id, row: None)
    for i in range(TAIL + 4 * TRIM_EVERY):
        log.emit(delta(i))
    assert log.base == 0 and len(log.rows) == log.last_seq


class Active:
    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.id = log.run_id


def live(*runs: Active) -> LiveRuns:
    table = LiveRuns()
    for active in runs:
        table.add_unattached(active)  # type: ignore[arg-type]
    return table


async def parents(store: SqliteStore) -> None:
    def op(conn):  # type: ignore[no-untyped-def]
        conn.execute(
            "INSERT INTO agents (id, name, provider, created_at, updated_at) "
            "VALUES ('x', 'x', 'echo', 'n', 'n')"
        )
        conn.execute(
            "INSERT INTO sessions (id, agent_id, created_at, updated_at) "
            "VALUES ('s', 'x', 'n', 'n')"
        )
        conn.execute(
            "INSERT INTO runs (id, session_id, agent_id, status, input, created_at) "
            "VALUES ('r', 's', 'x', 'running', '[]', 'n')"
        )

    await store.db.write(op)


def test_followers_read_dropped_rows_from_the_database_without_gap_or_duplicate(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        store = SqliteStore(str(tmp_path / "f.db"), event_flush_s=0.01)
        await store.open()
        try:
            await parents(store)
            hub = Hub()
            log = RunLog("r", "s", 1, store.db.append_events, hub.publish)
            followers = Followers(store, hub, live(Active(log)))
            for i in range(300):
                log.emit(delta(i))
            await store.db.flush()
            log.emit(delta(300))  # a trim looks at what the flush committed
            for i in range(301, 300 + TRIM_EVERY):
                log.emit(delta(i))
            assert log.base > 200

            seen: list[int] = []

            async def slow_reader() -> None:
                async for rows in followers.follow("r", 0, 5):
                    seen.extend(r[1] for r in rows)
                    # falls behind: away until its next row is only in the database
                    await until(lambda: log.base > seen[-1] or log.finished, "rows dropped")

            reader = asyncio.create_task(slow_reader())
            for _ in range(8):  # the run goes on past the reader, eight times
                await until(lambda: seen and seen[-1] >= log.base, "the reader past the stored")
                for _ in range(50):
                    log.emit(delta(len(seen)))
                await store.db.flush()
                for _ in range(TRIM_EVERY):  # a trim looks at what the flush committed
                    log.emit(delta(len(seen)))
            await store.db.flush()
            log.finish()
            await asyncio.wait_for(reader, 10)
            assert seen == list(range(1, log.last_seq + 1))
        finally:
            await store.close()

    asyncio.run(go())


def test_a_run_shows_at_most_a_window_of_rows_past_its_commits() -> None:
    """Recovery numbers a crashed run's end past WINDOW: the log must never show more."""

    async def go() -> None:
        sink = Batches()
        flushes: list[int] = []

        async def flush() -> None:
            flushes.append(log.last_seq)
            sink.commit()

        log = RunLog("r", "s", 1, sink, lambda session_id, row: None, flush)
        while not log.crowded:
            log.emit(delta(log.last_seq))
            assert log.last_seq <= WINDOW
        assert log.last_seq > WINDOW - 4 * TRIM_EVERY  # crowded only near the window's end
        await log.room()
        assert flushes == [log.last_seq] and not log.crowded
        log.emit(delta(0))

        async def failed_commit() -> None:
            await asyncio.sleep(0)

        stuck = RunLog("q", "s", 1, Batches(), lambda session_id, row: None, failed_commit)
        while not stuck.crowded:
            stuck.emit(delta(0))
        with pytest.raises(StoreError):  # flushed, still not stored: the run must not go on
            await stuck.room()

    asyncio.run(go())
