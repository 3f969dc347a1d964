"""The event log in chunks: what goes in comes back, page by page, byte for byte."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.store import SqliteStore, eventlog
from server.store.eventlog import CHUNK, EventRow, chunks
from server.store.sqlite import SCHEMA_PATH, _built, _connect_writer, _migrate, schema_steps


def rows_of(run_id: str, seqs: range | list[int]) -> list[EventRow]:
    return [
        (run_id, s, "text_delta", b'{"type":"text_delta","text":"w%d ","index":0}' % s)
        for s in seqs
    ]


def test_interleaved_runs_become_chunks_of_consecutive_events() -> None:
    a, b = rows_of("a", range(1, 601)), rows_of("b", [1, 2, 3, 7, 8])
    mixed = [row for pair in itertools.zip_longest(a, b) for row in pair if row]
    found = list(chunks(mixed))
    assert [(c[0], c[1], c[2]) for c in found] == [
        ("a", 1, CHUNK),
        ("a", CHUNK + 1, 2 * CHUNK),
        ("a", 2 * CHUNK + 1, 600),
        ("b", 1, 3),
        ("b", 7, 8),
    ]
    first = found[0]
    assert first[3].split(" ") == ["text_delta"] * CHUNK
    assert first[4].split(b"\n") == [row[3] for row in a[:CHUNK]]


async def stored(tmp_path: Path, batches: list[list[EventRow]]) -> SqliteStore:
    store = SqliteStore(str(tmp_path / "log.db"))
    await store.open()
    await store.db.write(lambda conn: _parents(conn, {row[0] for b in batches for row in b}))
    for batch in batches:
        store.db.append_events(batch)
        await store.db.flush()
    return store


def _insert(conn: sqlite3.Connection, rows: list[EventRow]) -> None:
    eventlog.write(conn, eventlog.statements(rows))


def _parents(conn: sqlite3.Connection, run_ids: set[str]) -> None:
    conn.execute(
        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
        "VALUES ('x', 'x', 'echo', 'n', 'n')"
    )
    conn.execute(
        "INSERT INTO sessions (id, agent_id, created_at, updated_at) VALUES ('s', 'x', 'n', 'n')"
    )
    for run_id in run_ids:
        conn.execute(
            "INSERT INTO runs (id, session_id, agent_id, status, input, created_at) "
            "VALUES (?, 's', 'x', 'running', '[]', 'n')",
            (run_id,),
        )


def test_replay_pages_return_every_event_once_in_order(tmp_path: Path) -> None:
    whole = rows_of("r", range(1, 1001))
    batches = [whole[:3], whole[3:700], whole[700:701], whole[701:]]

    async def go() -> None:
        store = await stored(tmp_path, batches)
        try:
            expected = whole
            assert await store.events.read("r", 0, 5000) == expected
            for after, limit in [(0, 1), (2, 5), (255, 2), (299, 300), (998, 10), (1000, 5)]:
                page = await store.events.read("r", after, limit)
                assert page == expected[after : after + limit]
            assert await store.events.last_seq("r") == 1000
            assert await store.events.last_seq("nothing") == 0
        finally:
            await store.close()

    asyncio.run(go())


def test_replay_goes_on_past_a_gap(tmp_path: Path) -> None:
    events = rows_of("r", [*range(1, 11), *range(15, 21), *range(400, 403)])

    async def go() -> None:
        store = await stored(tmp_path, [events])
        try:
            expected = events
            assert await store.events.read("r", 0, 100) == expected
            assert await store.events.read("r", 0, 12) == expected[:12]
            assert await store.events.read("r", 12, 3) == expected[10:13]
            assert await store.events.read("r", 20, 10) == expected[16:]
        finally:
            await store.close()

    asyncio.run(go())


def test_a_log_of_one_row_per_event_is_carried_over_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    steps = schema_steps(SCHEMA_PATH.read_text())
    conn = _connect_writer(str(path))
    _migrate(conn, steps[:2])  # the schema before the chunked log
    _parents(conn, {"r"})
    old = [*rows_of("r", range(1, 6)), ("r", 6, "done", b'{"type":"done","x":"\\u00e9 \\n"}')]
    conn.executemany("INSERT INTO events (run_id, seq, type, data) VALUES (?, ?, ?, ?)", old)
    conn.close()

    async def go() -> None:
        store = SqliteStore(str(path))
        await store.open()
        try:
            got = await store.events.read("r", 0, 100)
            assert got == old
            assert await store.events.last_seq("r") == 6
        finally:
            await store.close()

    asyncio.run(go())


def test_a_log_keyed_by_run_is_carried_over_into_write_order(tmp_path: Path) -> None:
    path = tmp_path / "keyed.db"
    steps = schema_steps(SCHEMA_PATH.read_text())
    conn = _connect_writer(str(path))
    _migrate(conn, steps[:4])  # the chunked log keyed by (run_id, first_seq)
    _parents(conn, {"a", "b"})
    written = [*rows_of("a", range(1, 300)), *rows_of("b", [1, 2, 5])]
    conn.executemany(
        "INSERT INTO events (run_id, first_seq, last_seq, types, data) VALUES (?, ?, ?, ?, ?)",
        chunks(written),
    )
    conn.close()

    async def go() -> None:
        store = SqliteStore(str(path))
        await store.open()
        try:
            assert await store.events.read("a", 0, 1000) == written[:299]
            assert await store.events.read("b", 0, 10) == written[299:]
            assert await store.events.last_seq("a") == 299
            await store.db.write(lambda c: _insert(c, rows_of("b", [5, 6, 7])))  # again
            await store.db.write(lambda c: _insert(c, rows_of("b", [6, 7])))
            assert [row[1] for row in await store.events.read("b", 0, 10)] == [1, 2, 5, 6, 7]
        finally:
            await store.close()

    asyncio.run(go())

    conn = sqlite3.connect(path)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    conn.close()
    assert "WITHOUT ROWID" not in sql  # new rows go onto the table's last pages


def test_a_commit_of_many_runs_is_written_a_few_statements_of_many_rows(tmp_path: Path) -> None:
    runs = [f"r{i:03}" for i in range(300)]
    written = [row for seq in (1, 2) for run in runs for row in rows_of(run, [seq])]
    prepared = list(eventlog.statements(written))
    assert [len(values) // 5 for _, values in prepared] == [128, 128, 44]  # chunks a statement

    async def go() -> None:
        store = await stored(tmp_path, [written])
        try:
            for run in ("r000", "r127", "r128", "r299"):
                assert await store.events.read(run, 0, 10) == [r for r in written if r[0] == run]
        finally:
            await store.close()

    asyncio.run(go())


def test_a_big_commits_statements_are_built_one_a_turn_of_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams due while a commit of many runs is built go out between its statements."""
    rows = [row for i in range(300) for row in rows_of(f"r{i:03}", [1])]
    seen: list[str] = []
    build = eventlog.statements

    def noted(rows: list[EventRow]) -> Iterator[eventlog.Statement]:
        for statement in build(rows):
            seen.append("statement")
            yield statement

    monkeypatch.setattr(eventlog, "statements", noted)

    async def go() -> list[eventlog.Statement]:
        async def stream() -> None:
            for _ in range(10):
                seen.append("turn")
                await asyncio.sleep(0)

        other = asyncio.create_task(stream())
        built = await _built(rows)
        await other
        return built

    assert asyncio.run(go()) == list(build(rows))
    first, last = seen.index("statement"), len(seen) - seen[::-1].index("statement")
    assert seen[first:last] == ["statement", "turn", "statement", "turn", "statement"]
