"""The event log's reads and its write buffer (the chunked row format is eventlog.py's)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from server.events import EventRow
from server.store.contract import EventBatch
from server.store.eventlog import CHUNK
from server.store.sqlite import Database


class Events:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, rows: Iterable[EventRow]) -> EventBatch:
        return self.db.append_events(rows)

    async def read(self, run_id: str, after: int, limit: int) -> list[EventRow]:
        """Up to `limit` events of the run after seq `after`, in order."""
        found: list[EventRow] = []
        while len(found) < limit:
            upto = after + limit - len(found)
            page = await self._between(run_id, after, upto)
            found += page
            if page and page[-1][1] == upto:
                after = upto
                continue
            resume = await self._next_after(run_id, page[-1][1] if page else after)
            if resume is None:
                break
            after = resume
        return found

    async def last_seq(self, run_id: str) -> int:
        row = await self.db.fetchone(
            "SELECT last_seq FROM events WHERE run_id = ? ORDER BY first_seq DESC LIMIT 1",
            (run_id,),
        )
        return int(row[0]) if row is not None else 0

    async def _between(self, run_id: str, after: int, upto: int) -> list[EventRow]:
        """The events with after < seq <= upto; a chunk that holds one starts CHUNK - 1
        before."""
        rows = await self.db.fetchall(
            "SELECT first_seq, types, data FROM events WHERE run_id = ? "
            "AND first_seq BETWEEN ? AND ? AND last_seq > ? ORDER BY first_seq",
            (run_id, after - CHUNK + 2, upto, after),
        )
        found: list[EventRow] = []
        for first, types, data in rows:
            seqs = itertools.count(first)
            items = zip(itertools.repeat(run_id), seqs, types.split(" "), bytes(data).split(b"\n"))
            found += [item for item in items if after < item[1] <= upto]
        return found

    async def _next_after(self, run_id: str, seq: int) -> int | None:
        """Where to go on past a gap in the log (a commit that failed): None at its end."""
        row = await self.db.fetchone(
            "SELECT first_seq FROM events WHERE run_id = ? AND first_seq > ? "
            "ORDER BY first_seq LIMIT 1",
            (run_id, seq),
        )
        return None if row is None else int(row[0]) - 1
