"""The event log: every SSE event of a run as it was sent, for replay and recovery.

A row holds a chunk of a run's consecutive events (at most CHUNK) from one commit: their
types, space-separated, and their JSON, newline-separated (msgspec JSON never holds a raw
newline). One row per event made a fast stream cost 20,000 B-tree inserts, each a round trip
of the GIL between the writer thread and the event loop; in chunks it is a few dozen, and a
paced stream's events (a few per commit) still share a row. Replay reads the chunks that
cover the wanted range and hands back the same (seq, type, data) rows as before.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.store.sqlite import Database

EventRow = tuple[str, int, str, bytes]  # (run_id, seq, type, data): one event
CHUNK = 256  # events per row at most: a replay page never reads far beyond what it returns
Chunk = tuple[str, int, int, str, bytes]  # (run_id, first_seq, last_seq, types, data)
Event = tuple[int, str, bytes]  # (seq, type, data)


def insert(conn: sqlite3.Connection, rows: list[EventRow]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO events (run_id, first_seq, last_seq, types, data) "
        "VALUES (?, ?, ?, ?, ?)",
        chunks(rows),
    )


def chunks(rows: list[EventRow]) -> Iterator[Chunk]:
    """Rows of many runs, interleaved, as each run's chunks of consecutive events."""
    by_run: dict[str, list[EventRow]] = {}
    for row in rows:
        mine = by_run.get(row[0])
        if mine is None:
            by_run[row[0]] = mine = []
        mine.append(row)
    for run_id, mine in by_run.items():
        for part in _consecutive(mine):
            types = " ".join([row[2] for row in part])
            data = b"\n".join([row[3] for row in part])
            yield run_id, part[0][1], part[-1][1], types, data


def _consecutive(rows: list[EventRow]) -> Iterator[list[EventRow]]:
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or i - start == CHUNK or rows[i][1] != rows[i - 1][1] + 1:
            yield rows[start:i]
            start = i


async def read(db: Database, run_id: str, after: int, limit: int) -> list[Event]:
    """Up to `limit` events of the run after seq `after`, in order."""
    found: list[Event] = []
    while len(found) < limit:
        upto = after + limit - len(found)
        page = await _between(db, run_id, after, upto)
        found += page
        if page and page[-1][0] == upto:
            after = upto
            continue
        resume = await _next_after(db, run_id, page[-1][0] if page else after)
        if resume is None:
            break
        after = resume
    return found


async def _between(db: Database, run_id: str, after: int, upto: int) -> list[Event]:
    """The events with after < seq <= upto; a chunk that holds one starts CHUNK - 1 before."""
    rows = await db.fetchall(
        "SELECT first_seq, types, data FROM events WHERE run_id = ? "
        "AND first_seq BETWEEN ? AND ? AND last_seq > ? ORDER BY first_seq",
        (run_id, after - CHUNK + 2, upto, after),
    )
    found: list[Event] = []
    for first, types, data in rows:
        items = zip(itertools.count(first), types.split(" "), bytes(data).split(b"\n"))
        found += [item for item in items if after < item[0] <= upto]
    return found


async def _next_after(db: Database, run_id: str, seq: int) -> int | None:
    """Where to go on past a gap in the log (a commit that failed): None at its end."""
    row = await db.fetchone(
        "SELECT first_seq FROM events WHERE run_id = ? AND first_seq > ? "
        "ORDER BY first_seq LIMIT 1",
        (run_id, seq),
    )
    return None if row is None else int(row[0]) - 1


async def last_seq(db: Database, run_id: str) -> int:
    row = await db.fetchone(
        "SELECT last_seq FROM events WHERE run_id = ? ORDER BY first_seq DESC LIMIT 1",
        (run_id,),
    )
    return int(row[0]) if row is not None else 0
