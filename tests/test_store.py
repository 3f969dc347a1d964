"""The store alone: schema steps, the group-committing writer, the event buffer."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from server.errors import Conflict
from server.store import SqliteStore, open_store
from server.store.sqlite import SCHEMA_PATH, SETTLE_MAX, TURN_BUSY_S, schema_steps
from tests import pg
from tests.pg import Databases


def test_schema_is_applied_once_and_recorded_in_user_version(tmp_path: Path) -> None:
    steps = schema_steps(SCHEMA_PATH.read_text())
    db = tmp_path / "s.db"

    async def go() -> None:
        for _ in range(2):
            store = SqliteStore(str(db))
            await store.open()
            await store.close()

    asyncio.run(go())
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(steps)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"agents", "sessions", "messages", "runs", "events"} <= tables
    finally:
        conn.close()


def test_schema_steps_must_be_numbered_in_order() -> None:
    with pytest.raises(RuntimeError):
        schema_steps("-- step 1: a\nSELECT 1;\n-- step 3: b\nSELECT 1;\n")


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()

    async def go() -> None:
        store = SqliteStore(str(db))
        with pytest.raises(RuntimeError, match="newer"):
            await store.open()
        await store.close()

    asyncio.run(go())


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    """The store on `path`, or on the PostgreSQL database `database` gives the test."""
    store = open_store(Databases.url or str(path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.usefixtures("database")
def test_concurrent_writes_share_commits_and_a_failing_op_undoes_only_itself(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with opened(tmp_path / "g.db") as store:
            db = store.db
            before = db.commits

            def insert(n: int):  # type: ignore[no-untyped-def]
                def op(conn: sqlite3.Connection) -> int:
                    conn.execute(
                        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                        "VALUES (?, ?, 'echo', 'now', 'now')",
                        (f"a{n}", f"agent{n}"),
                    )
                    if n == 7:
                        raise Conflict("seven fails")
                    return n

                return op

            results = await asyncio.gather(
                *(db.write(insert(n)) for n in range(50)), return_exceptions=True
            )
            assert next(r for r in results if isinstance(r, Exception)).message == "seven fails"
            assert sorted(r for r in results if isinstance(r, int)) == [
                n for n in range(50) if n != 7
            ]
            assert db.commits - before <= 3  # fifty operations, a few commits
            rows = await db.fetchall("SELECT id FROM agents WHERE id LIKE 'a%'")
            assert len(rows) == 49 and "a7" not in {r[0] for r in rows}

    asyncio.run(go())


def test_a_big_commit_hands_its_results_back_in_order_a_slice_per_loop_turn(
    tmp_path: Path,
) -> None:
    """A thousand runs started in one commit must not all wake in one turn of the loop; and
    a turn that took long (the loop is busy) makes the next slice smaller."""

    async def go() -> None:
        async with opened(tmp_path / "s.db") as store:
            db = store.db
            await db.flush()
            before = db.commits
            futures = [db.submit(lambda conn, i=i: i) for i in range(SETTLE_MAX * 8)]
            order: list[int] = []
            for future in futures:
                future.add_done_callback(lambda f: order.append(f.result()))
            settled = [0]  # how many were settled, at each turn of the loop from the first
            slow = 2  # the turn that takes long: the second after the first result
            loop = asyncio.get_running_loop()

            def turn() -> None:
                settled.append(sum(f.done() for f in futures))
                if len(settled) == slow + 1:
                    time.sleep(TURN_BUSY_S * 3)  # one slow turn, as a busy loop has
                if settled[-1] < len(futures):
                    loop.call_soon(turn)

            # counted from the first result on: a loop spinning while the writer commits
            # would keep the GIL from it
            futures[0].add_done_callback(lambda _: turn())
            assert await asyncio.gather(*futures) == list(range(len(futures)))
            assert db.commits == before + 1 and order == list(range(len(futures)))
            steps = [b - a for a, b in itertools.pairwise(settled) if b > a]
            assert steps[0] == max(steps) == SETTLE_MAX  # the first slice has no turn to go by
            after = [b - a for a, b in itertools.pairwise(settled[slow:])][:2]
            assert min(after) <= SETTLE_MAX // 2  # the slice after the slow turn was halved

    asyncio.run(go())


@pytest.mark.usefixtures("database")
def test_buffered_events_commit_in_batches_and_on_close(tmp_path: Path) -> None:
    async def go() -> None:
        store = open_store(Databases.url or str(tmp_path / "e.db"), event_flush_s=0.05)
        await store.open()
        db = store.db
        await db.write(
            lambda conn: conn.execute(
                "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                "VALUES ('x', 'x', 'echo', 'n', 'n')"
            )
        )
        await db.write(
            lambda conn: conn.execute(
                "INSERT INTO sessions (id, agent_id, created_at, updated_at) "
                "VALUES ('s', 'x', 'n', 'n')"
            )
        )
        await db.write(
            lambda conn: conn.execute(
                "INSERT INTO runs (id, session_id, agent_id, status, input, created_at) "
                "VALUES ('r', 's', 'x', 'running', '[]', 'n')"
            )
        )
        before = db.commits
        for seq in range(1, 1001):
            db.append_events([("r", seq, "text_delta", b"{}")])
            if seq % 100 == 0:
                await asyncio.sleep(0)
        await db.flush()
        assert db.commits - before <= 5
        assert len(await store.events.read("r", 0, 5000)) == 1000
        db.append_events([("r", 1001, "done", b"{}")])
        await store.close()
        if Databases.url:
            query = "SELECT max(last_seq) FROM events"
            assert await asyncio.to_thread(pg.rows_of, Databases.url, query) == [(1001,)]
            return
        check = sqlite3.connect(tmp_path / "e.db")
        assert check.execute("SELECT max(last_seq) FROM events").fetchone()[0] == 1001
        check.close()

    asyncio.run(go())


def test_a_later_write_rides_with_the_next_commit_or_the_flush(tmp_path: Path) -> None:
    async def go() -> None:
        store = SqliteStore(str(tmp_path / "l.db"), event_flush_s=0.3)
        await store.open()
        db = store.db
        await db.flush()
        before = db.commits

        def insert(name: str) -> Any:
            return lambda conn: conn.execute(
                "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                "VALUES (?, ?, 'echo', 'n', 'n')",
                (name, name),
            )

        db.event_flush_s = 3600  # the flush time is far off: nothing but a write can take it
        later = db.submit_later(insert("later"))
        for _ in range(
            10
        ):  # the writer wakes for it (it would take it now for a commit of its own)
            await asyncio.sleep(0)
        assert not later.done() and db.commits == before  # no commit of its own
        await db.write(insert("now"))  # a real write takes it along, in order
        assert later.done() and db.commits == before + 1
        db.event_flush_s = 0.3
        alone = db.submit_later(insert("alone"))
        await asyncio.wait_for(alone, 30)  # with nothing else, at the flush time
        assert db.commits == before + 2  # in a commit of its own
        taken_back = db.submit_later(insert("taken back"))
        assert db.withdraw(taken_back) and taken_back.cancelled()
        assert not db.withdraw(alone)  # committed already: too late
        db.submit_later(insert("at close"))
        await store.close()
        check = sqlite3.connect(tmp_path / "l.db")
        names = [r[0] for r in check.execute("SELECT name FROM agents ORDER BY rowid")]
        assert names[-4:] == ["later", "now", "alone", "at close"]
        check.close()

    asyncio.run(go())
