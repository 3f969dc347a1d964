"""The events of one active run: numbered, encoded once, handed to the event log's write
buffer and the session channel, and followed by any number of readers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from server import events
from server.events import Event

# (run_id, seq, type, data) -- one event as stored and as sent
Row = tuple[str, int, str, bytes]


class RunLog:
    def __init__(
        self,
        run_id: str,
        session_id: str,
        first_seq: int,
        sink: Callable[[Iterable[Row]], None],
        publish: Callable[[str, Row], None],
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.base = first_seq - 1  # events up to here are only in the database
        self.rows: list[Row] = []
        self.finished = False
        self._sink = sink
        self._publish = publish
        self._changed = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.base + len(self.rows)

    def emit(self, event: Event) -> int:
        seq = self.last_seq + 1
        row = (self.run_id, seq, events.event_type(event), events.encode(event))
        self.rows.append(row)
        self._sink((row,))
        self._publish(self.session_id, row)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return seq

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    def since(self, after: int) -> list[Row]:
        return self.rows[max(0, after - self.base) :]

    async def wait(self, after: int, timeout: float) -> list[Row] | None:
        """Rows after `after`; [] if none came within `timeout`; None when the run is over
        and everything has been read."""
        if self.last_seq <= after and not self.finished:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return []
        rows = self.since(after)
        if rows:
            return rows
        return None if self.finished else []
