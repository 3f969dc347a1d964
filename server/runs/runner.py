"""A run's life, as the HTTP edge sees it: one active run per session, owned by the server
(not by the request that started it), persisted step by step, fanned out to any number of
readers, cancellable.

The request that starts a run only waits on it or follows its events, through the
`RunHandle` it gets back; if that client goes away the run goes on (unless it asked for
`cancel_on_disconnect`). Runs left unfinished by a dead process are marked `interrupted` at
start-up and their history repaired.

The parts: `LiveRuns` (table.py) is the one table of live runs; `Admission` turns a message
into a run; `Pauses` closes and resumes runs paused for client tools; `Driver` runs the loop
and stores each step; `Followers` reads a run's or a session's events back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from server.compaction import fixed_tokens
from server.errors import Conflict, SessionBusy
from server.events import EventRow
from server.meter import Meter
from server.models import Agent, ClientTool, Message, Run, SessionRecord, ToolResultBlock, Turn
from server.providers.base import ProviderContext
from server.runs import agentspec, counting, ephemeral
from server.runs.active import ActiveRun, RunRequest
from server.runs.admission import Admission
from server.runs.agentspec import unusable_reason
from server.runs.channel import Hub
from server.runs.driver import Driver, RunnerSettings
from server.runs.followers import Followers
from server.runs.handle import RunHandle
from server.runs.histories import Histories
from server.runs.pauses import Pauses
from server.runs.peers import Peers
from server.runs.recovery import interrupt_unfinished
from server.runs.table import LiveRuns
from server.session import History
from server.store import Store

__all__ = ["Runner", "RunnerSettings"]


class Runner:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        provider_ctx: ProviderContext,
        settings: RunnerSettings,
        meter: Meter | None = None,
    ) -> None:
        self.meter = meter = meter or Meter()
        self.store = store
        self.hub = hub
        self.provider_ctx = provider_ctx
        self.settings = settings
        self.table = LiveRuns()
        self.histories = Histories(store)
        self.driver = Driver(
            store=store,
            hub=hub,
            table=self.table,
            histories=self.histories,
            provider_ctx=provider_ctx,
            settings=settings,
            meter=meter,
        )
        meter.watch_runs(self.table.count)
        self.pauses = Pauses(store, self.table, self.driver, settings.tools)
        self.peers = Peers(store, hub, self.table, self._cancel_here, settings.lease_timeout_s)
        self.driver.on_idle = self.peers.release
        self.pauses.peers = self.peers  # a resume takes the session's lease
        self.followers = Followers(store, hub, self.table, self.peers)
        self.admission = Admission(
            store, self.table, self.driver, self.pauses, settings.tools, peers=self.peers
        )
        self._drain: asyncio.Future[None] | None = None
        self._cancels: set[asyncio.Future[None]] = set()

    # -- starting runs ----------------------------------------------------------------------
    async def submit(
        self,
        tenant: str,
        session_key: str,
        request: RunRequest,
        idempotency_key: str | None = None,
    ) -> RunHandle:
        """Start (or queue) a run on the tenant's session. A repeated idempotency key returns
        the first run instead."""
        started = await self.admission.submit(tenant, session_key, request, idempotency_key)
        if isinstance(started, Run):
            return RunHandle(self, None, started)
        return RunHandle(self, started)

    async def run_ephemeral(
        self, agent: Agent, work_dir: str | None, history: list[Message], request: RunRequest
    ) -> RunHandle:
        """Run with nothing written to the database (POST /run's no_persistence)."""
        self.table.check_open()
        active = ephemeral.prepare(agent, work_dir, history, request)
        self.table.add_unattached(active)
        self.driver.start(active)
        return RunHandle(self, active)

    async def resume(
        self, tenant: str, session_key: str, run_id: str, supplied: list[ToolResultBlock]
    ) -> RunHandle:
        """A run paused for client tools goes on with their results."""
        return RunHandle(self, await self.pauses.resume(tenant, session_key, run_id, supplied))

    def session_created(self, tenant: str, record: SessionRecord) -> None:
        """A session just created: its first message needs not read the record back."""
        self.admission.records.keep((tenant, record.id), record)

    async def count_tokens(
        self, agent: Agent, system: str | None, turns: list[Turn], client: list[ClientTool]
    ) -> int | None:
        """The agent's provider's count of a run's input, None where it has none."""
        agent = agentspec.for_request(agentspec.offered(agent, self.settings.tools), system, None)
        return await counting.provider_count(agent, self.provider_ctx, turns, client)

    @staticmethod
    def model_view(messages: list[Message]) -> list[Turn]:
        """The turns a model is sent of a session's stored messages: from its latest
        compaction entry (the summary, then the turns after it), else all of them."""
        return History.of(messages).turns()

    # -- what a handle and the routes ask ----------------------------------------------------
    def queue_position(self, run_id: str) -> int | None:
        return self.table.queue_position(run_id)

    def is_live(self, run_id: str) -> bool:
        """The run is in memory (running, queued, or its end still being stored)."""
        return self.table.get(run_id) is not None

    def session_idle(self, session_id: str) -> bool:
        return self.table.idle(session_id)

    def starts_unusable(self, active: ActiveRun) -> bool:
        return unusable_reason(active.agent, self.provider_ctx) is not None

    def follow(
        self, run_id: str, after: int, ping_s: float, known: ActiveRun | None = None
    ) -> AsyncIterator[list[EventRow]]:
        return self.followers.follow(run_id, after, ping_s, known)

    def watch(
        self, session_id: str, position: tuple[str, int] | None, ping_s: float
    ) -> AsyncIterator[list[EventRow]]:
        return self.followers.watch(session_id, position, ping_s)

    # -- stopping runs ----------------------------------------------------------------------
    async def cancel(self, active: ActiveRun, status: str = "cancelled") -> None:
        await self.driver.cancel(active, status)

    async def cancel_run(self, run: Run) -> None:
        """Cancel by the client: an active run stops; a paused one is closed; a finished one
        stays as it is."""
        active = self.table.get(run.id)
        if active is not None:
            await self.driver.cancel(active)
        elif run.status in ("running", "queued") and self.peers.shared:
            await self._cancel_elsewhere(run)
        elif run.status == "requires_action":
            paused = await self.store.runs.get(run.id)
            await self.pauses.close(paused, "cancelled")

    async def _cancel_elsewhere(self, run: Run) -> None:
        """Ask the process running it to cancel the run, and wait until its end is out (a
        minute at most; a process that died meanwhile has its runs interrupted instead)."""
        await self.peers.cancel_elsewhere(run.id)
        after = await self.store.events.last_seq(run.id)

        async def ended() -> None:
            async for _ in self.follow(run.id, after, 1.0):
                pass

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended(), 60)

    def _cancel_here(self, run_id: str, status: str) -> None:
        """Another process was asked to stop a run this one is running."""
        active = self.table.get(run_id)
        if active is not None and status in ("cancelled", "interrupted"):
            task = asyncio.ensure_future(self.driver.cancel(active, status))
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)

    async def stop_session(self, session_id: str) -> None:
        """Before a session is deleted: stop its runs and close its watchers."""
        for active in self.table.of_session(session_id):
            await self.driver.cancel(active)
        self.hub.end_session(session_id)
        self.histories.forget(session_id)
        self.admission.records.forget_session(session_id)

    def begin_shutdown(self) -> None:
        """Start draining now (on SIGTERM), before the HTTP server closes its connections."""
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._shutdown())

    async def shutdown(self) -> None:
        self.begin_shutdown()
        assert self._drain is not None
        await self._drain

    async def _shutdown(self) -> None:
        """Stop accepting runs, give running ones the grace period, then interrupt the rest."""
        self.table.close()
        for active in self.table.queued():
            await self.driver.cancel(active, "interrupted")
        waiting = [active.done.wait() for active in self.table.all()]
        if waiting:
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in waiting], timeout=self.settings.shutdown_grace_s
            )
        live = self.table.all()
        await asyncio.gather(*(self.driver.cancel(a, "interrupted") for a in live))
        await self.peers.stop()
        self.hub.close()

    async def compact(self, record: SessionRecord) -> Message:
        """Compact an idle session now (POST /sessions/{id}/compact): the entry stored."""
        blocker = self.table.blocker(record.id)
        if blocker is not None:
            raise SessionBusy(
                f"session {record.id} is busy with run {blocker.id}; compact it once the run "
                "has ended (a run compacts by itself when its input passes compact_at)",
                run_id=blocker.id,
            )
        agent = await self.store.agents.get(record.agent_id, None)
        fixed = fixed_tokens(agent.system, [])
        # on demand: everything before the latest user message
        done = await self.driver.compactor.compact(record.id, agent, fixed, keep=0, held=False)
        if done is None:
            raise Conflict(
                "nothing to compact: the session holds no turns before its latest user "
                "message that are not already summarised"
            )
        return done.entry

    def on_run_end(self, callback: Callable[[], None]) -> None:
        """`callback()` after each run's end is stored (the webhook sender wakes)."""
        self.driver.ended = callback

    async def recover(self) -> int:
        """At start-up: end the runs a dead process left unfinished. With other processes on
        the database, only those whose session no live process holds (peers.py), and from
        now on whenever a process dies."""
        if self.peers.shared:
            await self.peers.start()
            return await self.peers.scan()
        return await interrupt_unfinished(self.store)
