"""Reading a run's events: replayed from the event log, then followed live, with no gap and
no duplicate at the seam; and the session channel, which follows every run of a session."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.errors import NotFound
from server.events import EventRow
from server.runs.active import ActiveRun
from server.runs.channel import Hub
from server.runs.peers import Peers
from server.runs.runlog import RunLog
from server.runs.signals import Quiet
from server.runs.table import LiveRuns
from server.store import Store

REPLAY_PAGE = 2000


class Followers:
    def __init__(self, store: Store, hub: Hub, table: LiveRuns, peers: Peers | None = None) -> None:
        self.peers = peers
        self.store = store
        self.hub = hub
        self.table = table

    async def follow(
        self, run_id: str, after: int, ping_s: float, known: ActiveRun | None = None
    ) -> AsyncIterator[list[EventRow]]:
        """The run's events after `after`: replayed from the log, then live until `done`.
        Yields [] when quiet for `ping_s` seconds. `known`: the run as its starter holds it,
        read from memory even once it has left the table (a run with no persistence has no
        log to replay: a reader that comes to it late still gets its events)."""
        active = self.table.get(run_id) or known
        if active is None:
            async for rows in self._elsewhere(run_id, after, ping_s):
                yield rows
            return
        runlog = active.log
        async for rows in self._stored(runlog, after):
            yield rows
            after = rows[-1][1]
        quiet = Quiet(ping_s)
        try:
            while True:
                batch = await runlog.wait(after, quiet)
                if batch is None:
                    return
                if batch and batch[0][1] > after + 1:  # dropped from memory while we sent
                    async for rows in self._replay(run_id, after, batch[0][1] - 1):
                        yield rows
                if batch:
                    after = batch[-1][1]
                yield batch
        finally:
            quiet.close()

    async def _elsewhere(
        self, run_id: str, after: int, ping_s: float
    ) -> AsyncIterator[list[EventRow]]:
        """A run this process does not hold: its log, and on another process's word (or each
        quiet time, for word missed) what was added to it, until `done`. One process alone on
        its database only replays."""
        peers = self.peers
        if peers is None or not peers.shared:
            async for rows in self._replay(run_id, after, None):
                yield rows
            return
        quiet = Quiet(ping_s)
        try:
            while True:
                waiter = peers.waiter(run_id, quiet)  # before the read: nothing missed
                ended = False
                async for rows in self._replay(run_id, after, None):
                    yield rows
                    after = rows[-1][1]
                    ended = rows[-1][2] == "done"
                if ended:
                    peers.forget(run_id, waiter)
                    return
                if not await self._unfinished(run_id):  # it ended since the read: the rest
                    peers.forget(run_id, waiter)
                    async for rows in self._replay(run_id, after, None):
                        yield rows
                    return
                if not await waiter:
                    peers.forget(run_id, waiter)
                    yield []
        finally:
            quiet.close()

    async def _unfinished(self, run_id: str) -> bool:
        try:
            stored = await self.store.runs.get(run_id)
        except NotFound:
            return False
        return stored.run.status in ("running", "queued")

    async def _stored(self, runlog: RunLog, after: int) -> AsyncIterator[list[EventRow]]:
        """The run's events after `after` that memory no longer holds, from the database."""
        while after < runlog.base:
            upto = runlog.base  # it may move on while we read
            async for rows in self._replay(runlog.run_id, after, upto):
                yield rows
            after = upto

    async def watch(
        self, session_id: str, position: tuple[str, int] | None, ping_s: float
    ) -> AsyncIterator[list[EventRow]]:
        """The session channel: live events of every run of the session. From a position
        (`run_id`, `seq`), first what came after it, then live, with no gap or duplicate."""
        watcher = self.hub.watch(session_id)
        seen: dict[str, int] = {}
        quiet = Quiet(ping_s)
        try:
            if position is not None:
                async for rows in self._catch_up(session_id, *position):
                    seen[rows[-1][0]] = rows[-1][1]
                    yield rows
            while True:
                batch = await watcher.next_batch(quiet)
                if batch is None:
                    return
                if seen:
                    batch = [row for row in batch if row[1] > seen.get(row[0], 0)]
                    if not batch:
                        continue
                yield batch
        finally:
            quiet.close()
            self.hub.leave(watcher)

    async def _catch_up(
        self, session_id: str, run_id: str, seq: int
    ) -> AsyncIterator[list[EventRow]]:
        for rid in await self.store.runs.ids_from(session_id, run_id):
            after = seq if rid == run_id else 0
            active = self.table.get(rid)
            if active is None:
                async for rows in self._replay(rid, after, None):
                    yield rows
                continue
            async for rows in self._stored(active.log, after):
                yield rows
                after = rows[-1][1]
            if active.log.since(after):
                yield active.log.since(after)

    async def _replay(
        self, run_id: str, after: int, upto: int | None
    ) -> AsyncIterator[list[EventRow]]:
        while True:
            page = await self.store.events.read(run_id, after, REPLAY_PAGE)
            rows = page if upto is None else [row for row in page if row[1] <= upto]
            if not rows:
                return
            yield rows
            after = rows[-1][1]
            if len(page) < REPLAY_PAGE:
                return

    # -- recovery at start-up -------------------------------------------------------------
