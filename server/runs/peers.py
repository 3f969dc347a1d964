"""The other processes on the same database, as this one's runs see them (the store's
`cluster`: on SQLite there are none, and nothing here does anything).

- A session is run by the process that holds its lease: admission takes it before a run
  starts (`acquire`), the driver gives it back once the session has nothing left in hand
  (`release`). While another process holds it, `if_busy` decides: reject (after a moment
  when nothing runs: a lease passing between processes); queue, in ticket order (below);
  interrupt, asking the holder to cancel its run first. A paused run's resume takes the
  lease too.
- Queue order across processes: a message sent with `if_busy: queue` is stored at once as a
  queued run with the session's next ticket (store `tickets`), and waits (`wait_turn`) until
  its ticket is the lowest still waiting, the session has nothing in hand here and the lease
  is this process's; woken by the session let go (here, or elsewhere by `LISTEN`) or its
  queue moving. "Arrival" is the order the database handed the tickets out.
- Events of runs executing elsewhere: each announcement (run id, last seq) wakes the
  followers of that run (`wait`), who read the events from the event log after the last one
  they sent, so replay and live are one read and the seam has no gap or duplicate; and the
  session channel's watchers get the new rows, read likewise from the log, in order.
- A cancel for a run executing elsewhere is passed to its process.
- Runs left `running` or `queued` by a process that died (its leases gone with its
  connection) are found every `lease_timeout_s / 2` by whichever process takes the scan job,
  marked `interrupted` and their histories repaired, as recovery does at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from server.errors import NotFound, StoreError
from server.runs.channel import Hub
from server.runs.recovery import interrupt_run
from server.runs.signals import Quiet, Signal
from server.runs.table import LiveRuns
from server.store import Store

log = logging.getLogger("sessiond.peers")
SCAN_JOB = "orphan-scan"
SEEN_RUNS = 50_000  # runs executing elsewhere whose last seq is kept
PASSING_S = 1.0  # a lease held with nothing running: how long it may take to come free


class Peers:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        table: LiveRuns,
        cancel_local: Callable[[str, str], None],
        lease_timeout_s: float,
    ) -> None:
        self.store = store
        self.cluster = store.cluster
        self.hub = hub
        self.table = table
        self.cancel_local = cancel_local
        self.lease_timeout_s = lease_timeout_s
        self._runs: dict[str, Signal] = {}  # run id → fired when it has new events elsewhere
        self._freed: dict[str, Signal] = {}  # session id → fired when it is let go elsewhere
        self._turns: dict[str, Signal] = {}  # session id → fired when its queue may move
        self._waiting: dict[str, asyncio.Future[None]] = {}  # ticketed run → its cancel
        self._heard: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()
        self._published: dict[str, int] = {}  # run id → its last seq announced
        self._session_of: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def shared(self) -> bool:
        return self.cluster.shared

    async def start(self) -> None:
        if not self.shared:
            return
        await self.cluster.start(self._on_events, self._on_cancel, self._on_free)
        self._tasks = [
            asyncio.create_task(self._channel(), name="sessiond-peer-channel"),
            asyncio.create_task(self._scan_loop(), name="sessiond-orphan-scan"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- leases -----------------------------------------------------------------------------
    def holds(self, session_id: str) -> bool:
        return self.cluster.holds(session_id)

    async def acquire(self, session_id: str) -> bool:
        return await self.cluster.hold(session_id)

    async def wait_free(self, session_id: str) -> None:
        """Until this process holds the session's lease. Woken when another lets it go; tried
        again every lease timeout too, for a process that died holding it."""
        quiet = Quiet(self.lease_timeout_s)
        try:
            while not await self.cluster.hold(session_id):
                signal = self._freed.setdefault(session_id, Signal())
                waiter = signal.next(quiet)
                if not await waiter:
                    signal.discard(waiter)
        finally:
            quiet.close()
            left = self._freed.get(session_id)
            if left is not None and not left.waiting():
                self._freed.pop(session_id, None)

    def release(self, session_id: str) -> None:
        """Give the session's lease back once nothing of it is left in hand here."""
        if self.shared and self.cluster.holds(session_id) and self.table.idle(session_id):
            self._move(session_id)  # a run waiting here for its ticket's turn goes first
            task = asyncio.ensure_future(self.cluster.let_go(session_id, self._needed(session_id)))
            task.add_done_callback(_log_failure)

    # -- queue tickets ----------------------------------------------------------------------
    async def wait_turn(self, run_id: str, session_id: str) -> None:
        """Until the queued run `run_id` (stored with its ticket) may start: its ticket is the
        session's lowest still waiting, nothing of the session is in hand here, and this
        process holds the lease. Woken when the session is let go here or elsewhere, or its
        queue moves; looked at again every lease timeout too (a ticket of a process that died
        is interrupted by the scan meanwhile). Raises `TicketCancelled` when the run is
        cancelled as it waits."""
        cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[run_id] = cancelled
        quiet = Quiet(self.lease_timeout_s)
        signal = self._turns.setdefault(session_id, Signal())
        try:
            while True:
                waiter = signal.next(quiet)  # before looking: a move meanwhile is not missed
                if await self._my_turn(run_id, session_id):
                    signal.discard(waiter)
                    return
                await asyncio.wait((waiter, cancelled), return_when=asyncio.FIRST_COMPLETED)
                signal.discard(waiter)
                if cancelled.done():
                    raise TicketCancelled(run_id)
        finally:
            quiet.close()
            self._waiting.pop(run_id, None)
            if not signal.waiting():
                self._turns.pop(session_id, None)

    async def serving(self, run_id: str) -> None:
        """Mark this process alive to serve the queued run (taken before the run is stored,
        so a scan never finds it unmarked while its process lives)."""
        await self.cluster.hold_ticket(run_id)

    async def served(self, run_id: str) -> None:
        await self.cluster.let_ticket_go(run_id)

    async def _my_turn(self, run_id: str, session_id: str) -> bool:
        if not self.table.idle(session_id):
            return False
        if await self.store.tickets.first(session_id) != run_id:
            return False
        return self.table.idle(session_id) and await self.cluster.hold(session_id)

    async def queue_moved(self, session_id: str) -> None:
        """A ticketed run left the queue without running (cancelled): the next may go."""
        self._move(session_id)
        await self.cluster.queue_moved(session_id)

    def _move(self, session_id: str) -> None:
        signal = self._turns.get(session_id)
        if signal is not None:
            signal.fire()

    async def cancel_elsewhere(self, run_id: str, status: str = "cancelled") -> None:
        await self.cluster.cancel_elsewhere(run_id, status)

    # -- word from the others -----------------------------------------------------------------
    def _on_events(self, items: list[tuple[str, int]]) -> None:
        for run_id, seq in items:
            if self.table.get(run_id) is not None:
                continue
            signal = self._runs.get(run_id)
            if signal is not None:
                signal.fire()
            after = self._published.pop(run_id, 0)
            self._published[run_id] = seq  # (moved to the end: the oldest go first)
            if len(self._published) > SEEN_RUNS:
                del self._published[next(iter(self._published))]
            if self.hub.watching():
                self._heard.put_nowait((run_id, after, seq))

    def _on_cancel(self, run_id: str, status: str) -> None:
        if self.table.get(run_id) is not None:
            self.cancel_local(run_id, status)
        waiting = self._waiting.get(run_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _on_free(self, session_id: str) -> None:
        signal = self._freed.get(session_id)
        if signal is not None:
            signal.fire()
        self._move(session_id)

    def waiter(self, run_id: str, quiet: Quiet) -> asyncio.Future[bool]:
        """True once the run has new events elsewhere, False once `quiet` has passed: taken
        before the follower reads the log, so that nothing committed after the read is
        missed. `forget` it once it is done with."""
        return self._runs.setdefault(run_id, Signal()).next(quiet)

    def forget(self, run_id: str, waiter: asyncio.Future[bool]) -> None:
        signal = self._runs.get(run_id)
        if signal is not None:
            signal.discard(waiter)
            if not signal.waiting():
                del self._runs[run_id]

    async def _channel(self) -> None:
        """The session channel's rows of runs executing elsewhere, in order."""
        while True:
            run_id, after, seq = await self._heard.get()
            try:
                await self._publish(run_id, after, seq)
            except (StoreError, NotFound) as exc:
                log.warning("could not read the events of run %s: %s", run_id, exc)

    async def _publish(self, run_id: str, after: int, seq: int) -> None:
        """The rows (after, seq] of a run executing elsewhere, to its session's watchers."""
        session_id = self._session_of.get(run_id)
        if session_id is None:
            session_id = (await self.store.runs.get(run_id)).run.session_id
            self._session_of[run_id] = session_id
            if len(self._session_of) > SEEN_RUNS:
                del self._session_of[next(iter(self._session_of))]
        if not self.hub.watched(session_id) or seq <= after:
            return
        for row in await self.store.events.read(run_id, after, seq - after):
            self.hub.publish(session_id, row)

    def _needed(self, session_id: str) -> Callable[[], bool]:
        return lambda: not self.table.idle(session_id)

    # -- runs of dead processes ---------------------------------------------------------------
    async def _scan_loop(self) -> None:
        while True:
            try:
                await self.scan()
            except StoreError as exc:
                log.warning("the scan for runs of stopped processes failed: %s", exc)
            await asyncio.sleep(self.lease_timeout_s / 2)

    async def scan(self) -> int:
        """Interrupt the runs no live process holds the session of; how many."""
        if not await self.cluster.take_job(SCAN_JOB):
            return 0
        count = 0
        moved: set[str] = set()
        try:
            for stored in await self.store.runs.unfinished():
                run = stored.run
                sid = run.session_id
                if run.status == "requires_action" or self.table.get(run.id) is not None:
                    continue
                if run.status == "queued" and (
                    run.id in self._waiting or await self.cluster.ticket_served(run.id)
                ):
                    continue  # waiting for its ticket's turn in a live process
                if self.cluster.holds(sid):
                    continue
                if (await self.store.runs.get(run.id)).run.status not in ("running", "queued"):
                    continue  # ended since the list was read: its lease is not the scan's to take
                if not await self.cluster.hold(sid):
                    continue  # held: its process is alive
                try:
                    now_stored = await self.store.runs.get(run.id)
                    if now_stored.run.status in ("running", "queued"):
                        await interrupt_run(self.store, now_stored.run)
                        count += 1
                        moved.add(sid)
                finally:
                    await self.cluster.let_go(sid, self._needed(sid))
            if count:
                await self.store.sessions.idle_orphans()
                log.warning("marked %d run(s) of a stopped process as interrupted", count)
                for sid in moved:  # tickets behind those may go now
                    await self.queue_moved(sid)
        finally:
            await self.cluster.end_job(SCAN_JOB)
        return count


class TicketCancelled(Exception):
    """A run cancelled while it waited for its ticket's turn."""


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("could not give a session's lease back: %s", task.exception())
