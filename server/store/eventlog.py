"""The event log: every SSE event of a run as it was sent, for replay and recovery.

A row holds a chunk of a run's consecutive events (at most CHUNK) from one commit: their
types, space-separated, and their JSON, newline-separated (msgspec JSON never holds a raw
newline). A row per event would make a fast stream cost an insert, and a round trip of the
GIL between the writer thread and the event loop, for every event; in chunks it is a few dozen
for 20,000 events, and a paced stream's events (a few per commit) still share a row (bench
stream, bench writes). Replay (events.py) reads the chunks that cover the wanted range and
hands back one row per event.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Iterable, Iterator

from server.events import EventRow

CHUNK = 256  # events per row at most: a replay page never reads far beyond what it returns
Chunk = tuple[str, int, int, str, bytes]  # (run_id, first_seq, last_seq, types, data)


Statement = tuple[str, list[object]]  # SQL and its parameters


def statements(rows: list[EventRow]) -> Iterator[Statement]:
    """The inserts that write the rows' chunks, up to INSERT_ROWS chunks a statement, one
    statement at a time (the database takes a turn of the event loop between them: see
    sqlite._built). They are built on the loop as a commit is handed to the writer thread,
    so that the writer runs no Python of its own for the event log: only sqlite3's binding
    and one step a statement, where `executemany` lets go of the GIL and takes it back for
    every row (bench many: a thousand runs' events in each commit)."""
    pending = chunks(rows)
    while part := list(itertools.islice(pending, INSERT_ROWS)):
        yield _insert_sql(len(part)), list(itertools.chain.from_iterable(part))


def write(conn: sqlite3.Connection, prepared: Iterable[Statement]) -> None:
    for sql, values in prepared:
        conn.execute(sql, values)


INSERT_ROWS = 128  # x 5 values: within the 999 variables older SQLite builds allow


@functools.cache
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    columns = "run_id, first_seq, last_seq, types, data"
    return f"INSERT OR IGNORE INTO events ({columns}) VALUES {values}"


def chunks(rows: list[EventRow]) -> Iterator[Chunk]:
    """Rows of many runs, interleaved, as each run's chunks of consecutive events. A commit
    holds a few events of each of a thousand runs: the sort (stable, so a run's rows stay in
    order), the grouping and the joins run in C, and Python sees each run once, not each row."""
    for run_id, group in itertools.groupby(sorted(rows, key=_run_of), key=_run_of):
        mine = list(group)
        if mine[-1][1] - mine[0][1] == len(mine) - 1:  # no gap: cut every CHUNK rows
            parts: Iterable[list[EventRow]] = (
                mine[i : i + CHUNK] for i in range(0, len(mine), CHUNK)
            )
        else:
            parts = _consecutive(mine)
        for part in parts:
            types = " ".join(map(_type_of, part))
            yield run_id, part[0][1], part[-1][1], types, b"\n".join(map(_data_of, part))


_run_of = operator.itemgetter(0)
_type_of = operator.itemgetter(2)
_data_of = operator.itemgetter(3)


def _consecutive(rows: list[EventRow]) -> Iterator[list[EventRow]]:
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or i - start == CHUNK or rows[i][1] != rows[i - 1][1] + 1:
            yield rows[start:i]
            start = i
