"""The events of one active run: numbered, encoded once, handed to the event log's write
buffer and the session channel, and followed by any number of readers.

A follower that wakes to find a burst (more than one new row) lets the run go on producing
for a few more turns of the event loop before it takes its batch: a fast run then reaches the
client in a few large chunks instead of one small chunk per event, while a paced run (one row
per wake-up, as a model streams) is sent at once.

Ids are promises: a follower sees a row as soon as it is emitted, before it is committed, so a
crash can lose ids a client already holds. A run therefore never shows more than WINDOW rows
past what is committed (when it would, it waits for the commit), and crash recovery numbers
the closing events of a run it interrupts past that window: every id a client can have seen
names one event forever, and a resume from any of them ends with the run's `error` and `done`.

Memory holds the rows not yet committed and a short tail: once the event log has a row and
TAIL newer ones exist, the row is dropped and `base` moves past it. A follower behind `base`
reads on from the database (Followers does), so a long run costs its readers nothing extra
and the server no more than a tail per run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from server import events
from server.errors import StoreError
from server.events import Event, EventRow
from server.runs.signals import Quiet, Signal
from server.store import EventBatch

_TYPES, _encode = events.TYPES, events.encode

GATHER_TURNS = 64  # event-loop turns a follower may wait for a run that is still producing
GATHER_ROWS = 2048  # … or until this many rows are waiting
TAIL = 2  # committed rows kept in memory: a follower a row or two behind needs no database
TRIM_EVERY = 4  # emits between looks at what has been committed
# Rows a run may show beyond its committed ones: far more than a commit interval of the
# fastest stream (bench writes: a zero-latency stream commits about once per 10,000 events),
# so a run waits on it only when the writer is stalled.
WINDOW = 1 << 16


class RunLog:
    def __init__(
        self,
        run_id: str,
        session_id: str,
        first_seq: int,
        sink: Callable[[Iterable[EventRow]], EventBatch | None],
        publish: Callable[[str, EventRow], None],
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.base = first_seq - 1  # events up to here are only in the database
        self.rows: list[EventRow] = []
        self.finished = False
        self._sink = sink
        self._publish = publish
        self._flush = flush
        self.crowded = False  # WINDOW rows past the committed ones: `room()` before more
        self._changed = Signal()
        self._batches: list[tuple[int, EventBatch]] = []  # (first seq, batch) not yet committed
        self._batch: EventBatch | None = EventBatch()  # the latest (a placeholder at first)
        self._next_trim = first_seq + TAIL + TRIM_EVERY
        self._stored = True

    @property
    def last_seq(self) -> int:
        return self.base + len(self.rows)

    def emit(self, event: Event) -> int:
        seq = self.base + len(self.rows) + 1
        row = (self.run_id, seq, _TYPES[type(event)], _encode(event))
        self.rows.append(row)
        batch = self._sink((row,))
        if batch is not self._batch:
            self._joined(seq, batch)
        self._publish(self.session_id, row)
        self._changed.fire()
        if seq >= self._next_trim:
            self._trim()
        return seq

    def hold(self, events: Iterable[Event]) -> list[EventRow]:
        """Number the events and hand them to the event log's write buffer now, but show them
        to readers only at `release`, once the write they go with (a step, or the run's end) is
        committed: no reader may see a tool result, or `done`, before what it reports is stored.
        Nothing may be emitted in between."""
        first = self.last_seq + 1
        held = [
            (self.run_id, seq, _TYPES[type(event)], _encode(event))
            for seq, event in enumerate(events, first)
        ]
        if not held:
            return held
        batch = self._sink(held)
        if batch is not self._batch:
            self._joined(first, batch)
        return held

    def release(self, held: list[EventRow]) -> None:
        if not held:
            return
        self.rows.extend(held)
        for row in held:
            self._publish(self.session_id, row)
        self._changed.fire()

    def _joined(self, seq: int, batch: EventBatch | None) -> None:
        """Rows from `seq` on go into a new write batch."""
        self._batch = batch
        if batch is None:
            self._stored = False  # nothing is written (an ephemeral run): memory is all there is
        else:
            self._batches.append((seq, batch))

    def _trim(self) -> None:
        """Drop committed rows older than the tail."""
        self._next_trim += TRIM_EVERY
        if not self._stored:
            return
        done = 0
        while done < len(self._batches) and self._batches[done][1].committed:
            done += 1
        del self._batches[:done]
        durable = self._batches[0][0] - 1 if self._batches else self.last_seq
        self.crowded = self.last_seq - durable >= WINDOW - 2 * TRIM_EVERY
        new_base = min(durable, self.last_seq - TAIL)
        if new_base > self.base:
            del self.rows[: new_base - self.base]
            self.base = new_base

    async def room(self) -> None:
        """Wait until the rows shown are within WINDOW of the committed ones."""
        if self._flush is not None:
            await self._flush()
        self._trim()
        if self.crowded:  # flushed, and the oldest rows still not stored: their commit failed
            raise StoreError(f"the events of run {self.run_id} could not be stored")

    def finish(self) -> None:
        self.finished = True
        self._changed.fire()

    def since(self, after: int) -> list[EventRow]:
        return self.rows[max(0, after - self.base) :]

    async def wait(self, after: int, quiet: Quiet) -> list[EventRow] | None:
        """Rows after `after` that memory holds (if older ones were dropped meanwhile, the
        first comes after `after + 1`: the ones between are in the database); [] if none
        came within the quiet time; None when the run is over and everything has been read."""
        if self.last_seq <= after and not self.finished:
            waiter = self._changed.next(quiet)
            if not await waiter:
                self._changed.discard(waiter)
                return []
            if self.last_seq - after > 1:
                await self._gather(after)
        rows = self.since(after)
        if rows:
            return rows
        return None if self.finished else []

    async def _gather(self, after: int) -> None:
        """Give a run in the middle of a burst a few loop turns to add to the batch."""
        seen = self.last_seq
        for _ in range(GATHER_TURNS):
            await asyncio.sleep(0)
            if self.last_seq == seen or self.finished or self.last_seq - after >= GATHER_ROWS:
                return
            seen = self.last_seq
