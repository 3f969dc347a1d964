"""The per-session channel: live events of every run of a session, fanned out to watchers.

This is what other servers use Redis pub/sub for. A watcher has a bounded buffer; one that
falls too far behind is dropped (its stream ends) and reconnects with Last-Event-ID, which
replays from the event log.
"""

from __future__ import annotations

from server.events import EventRow
from server.runs.signals import Quiet, Signal


class Watcher:
    __slots__ = ("_signal", "closed", "items", "limit", "session_id")

    def __init__(self, session_id: str, limit: int) -> None:
        self.session_id = session_id
        self.limit = limit
        self.items: list[EventRow] = []
        self.closed = False
        self._signal = Signal()

    def push(self, item: EventRow) -> None:
        if len(self.items) >= self.limit:
            self.close()
            return
        self.items.append(item)
        self._signal.fire()

    def close(self) -> None:
        self.closed = True
        self._signal.fire()

    async def next_batch(self, quiet: Quiet) -> list[EventRow] | None:
        """What arrived since the last call; [] after the quiet time; None once closed."""
        if not self.items and not self.closed:
            waiter = self._signal.next(quiet)
            if not await waiter:
                self._signal.discard(waiter)
                return []
        if self.items:
            batch, self.items = self.items, []
            return batch
        return None


class Hub:
    def __init__(self, buffer_limit: int = 10_000) -> None:
        self.buffer_limit = buffer_limit
        self._watchers: dict[str, set[Watcher]] = {}
        self.closed = False

    def watch(self, session_id: str) -> Watcher:
        watcher = Watcher(session_id, self.buffer_limit)
        if self.closed:
            watcher.close()
        self._watchers.setdefault(session_id, set()).add(watcher)
        return watcher

    def leave(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.session_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.session_id]

    def watching(self) -> bool:
        """Anyone watches any session."""
        return bool(self._watchers)

    def watched(self, session_id: str) -> bool:
        return session_id in self._watchers

    def publish(self, session_id: str, item: EventRow) -> None:
        for watcher in self._watchers.get(session_id, ()):
            watcher.push(item)

    def end_session(self, session_id: str) -> None:
        for watcher in self._watchers.pop(session_id, set()):
            watcher.close()

    def close(self) -> None:
        self.closed = True
        for session_id in list(self._watchers):
            self.end_session(session_id)
