"""The TTL sweeper: a background task that deletes sessions idle past their `ttl_seconds`.

`expires_at` is kept by the store (updated_at + ttl, moved by every activity). A session is
deleted -- with its messages, runs and events, by the schema's cascades -- only if it is still
expired and idle at the moment of deletion, in the same statement, so a message that arrives
meanwhile keeps it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from server.ids import now
from server.runs.runner import Runner
from server.store import Store

log = logging.getLogger("sessiond.sweeper")
SWEEP_JOB = "ttl-sweep"


class Sweeper:
    """`clock` says the time a sweep compares `expires_at` with (an RFC 3339 stamp) and
    `sleep` waits out the interval between sweeps: tests give their own, to move time."""

    def __init__(
        self,
        store: Store,
        runner: Runner,
        interval_s: float,
        *,
        clock: Callable[[], str] = now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.runner = runner
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sessiond-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """Delete every expired idle session now; returns how many went."""
        deleted = 0
        while True:
            stamp = self.clock()
            batch = [sid for sid in await self.store.sessions.expired(stamp) if self._idle(sid)]
            gone = [sid for sid in batch if await self.store.sessions.delete_expired(sid, stamp)]
            for sid in gone:
                await self.runner.stop_session(sid)  # ends the session channel's watchers
            deleted += len(gone)
            if len(gone) < len(batch) or len(batch) < 100:
                break
        if deleted:
            log.info("deleted %d expired session(s)", deleted)
        return deleted

    def _idle(self, session_id: str) -> bool:
        return self.runner.session_idle(session_id)

    async def _loop(self) -> None:
        while True:
            await self.sleep(self.interval_s)
            try:
                if await self.store.cluster.take_job(SWEEP_JOB):  # one process sweeps
                    try:
                        await self.sweep()
                    finally:
                        await self.store.cluster.end_job(SWEEP_JOB)
            except Exception:
                log.exception("the TTL sweep failed; trying again in %.0f s", self.interval_s)
