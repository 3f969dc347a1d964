"""A run's life: one active run per session, owned by the server (not by the request that
started it), persisted step by step, fanned out to any number of readers, cancellable.

The request that starts a run only waits on it or follows its events; if that client goes
away the run goes on (unless it asked for `cancel_on_disconnect`). Runs left unfinished by
a dead process are marked `interrupted` at start-up and their history repaired.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from server import providers
from server.errors import (
    ApiError,
    ProviderError,
    ShuttingDown,
)
from server.events import (
    Done,
    Error,
    Event,
    MessageStart,
    RequiresAction,
)
from server.ids import now
from server.loop import LoopSettings, StepOutcome, run_loop
from server.models import (
    Agent,
    ErrorInfo,
    Message,
    PendingToolCall,
    Run,
    SessionRecord,
    ToolResultBlock,
)
from server.providers.base import ProviderContext
from server.runs import ephemeral
from server.runs.active import ActiveRun, RunRequest
from server.runs.admission import Admission
from server.runs.channel import Hub
from server.runs.followers import Followers
from server.runs.histories import Histories
from server.runs.pauses import Pauses
from server.runs.recovery import interrupt_unfinished
from server.runs.runlog import Row, RunLog
from server.runs.stops import stop_message
from server.session import Session
from server.store import Store
from server.store import runs as run_ops
from server.tools.base import ToolContext, ToolSettings

log = logging.getLogger("sessiond.runner")
T = TypeVar("T")


class RunnerSettings(msgspec.Struct, frozen=True):
    loop: LoopSettings = LoopSettings()
    tools: ToolSettings = ToolSettings()
    shutdown_grace_s: float = 10.0
    run_max_s: float = 3600.0  # a run's deadline when its agent sets none
    run_max_ceiling_s: float = 86400.0  # … and the longest any agent gets

    def deadline_s(self, agent: Agent) -> float:
        return min(agent.max_run_seconds or self.run_max_s, self.run_max_ceiling_s)


class Runner:
    def __init__(
        self, store: Store, hub: Hub, provider_ctx: ProviderContext, settings: RunnerSettings
    ) -> None:
        self.store = store
        self.hub = hub
        self.provider_ctx = provider_ctx
        self.settings = settings
        self.runs: dict[str, ActiveRun] = {}
        self.running: dict[str, ActiveRun] = {}  # session id → its running run
        self.queues: dict[str, deque[ActiveRun]] = {}
        self.followers = Followers(store, hub, self.runs)
        self.pauses = Pauses(self)
        self.histories = Histories(store)
        self.admission = Admission(self)
        self.accepting = True
        self._drain: asyncio.Future[None] | None = None

    # -- starting runs ----------------------------------------------------------------------
    async def submit(
        self, session_key: str, request: RunRequest, idempotency_key: str | None = None
    ) -> ActiveRun | Run:
        """Start (or queue) a run. A repeated idempotency key returns the first run instead."""
        return await self.admission.submit(session_key, request, idempotency_key)

    async def run_ephemeral(
        self, agent: Agent, work_dir: str | None, history: list[Message], request: RunRequest
    ) -> ActiveRun:
        """Run with nothing written to the database (POST /run's no_persistence)."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down; retry shortly")
        active = ephemeral.prepare(agent, work_dir, history, request)
        self.runs[active.id] = active
        active.task = asyncio.create_task(self._drive(active), name=f"run-{active.id}")
        return active

    def _runlog(self, run_id: str, session_id: str, first_seq: int) -> RunLog:
        db = self.store.db
        return RunLog(
            run_id=run_id,
            session_id=session_id,
            first_seq=first_seq,
            sink=db.append_events,
            publish=self.hub.publish,
            flush=db.flush,
        )

    def _forget(self, active: ActiveRun) -> None:
        self.runs.pop(active.id, None)
        self._release(active)

    def _release(self, active: ActiveRun) -> None:
        """The run no longer holds its session (or its place in the session's queue)."""
        if self.running.get(active.session_id) is active:
            del self.running[active.session_id]
        queue = self.queues.get(active.session_id)
        if queue is not None and active in queue:
            queue.remove(active)
        if queue is not None and not queue:
            del self.queues[active.session_id]

    def status_of(self, started: ActiveRun | Run) -> str:
        """A run's status now: a queued run that has been promoted reads as running."""
        if isinstance(started, Run):
            return started.status
        if started.done.is_set() or self.queue_position(started.id) is not None:
            return started.run.status
        return "running"

    def queue_position(self, run_id: str) -> int | None:
        active = self.runs.get(run_id)
        if active is None or active.run.status != "queued":
            return None
        queue = self.queues.get(active.session_id, deque())
        return list(queue).index(active) + 1 if active in queue else None

    # -- driving a run ----------------------------------------------------------------------
    async def _drive(
        self,
        active: ActiveRun,
        first_step: int = 0,
        prelude: Callable[[ActiveRun], Awaitable[None]] | None = None,
    ) -> None:
        """Run the loop to its end, whatever happens; `_finish` always runs exactly once."""
        status, stop_reason, error = "completed", None, None
        if first_step >= active.agent.max_steps:
            stop_reason = "max_steps"
        pending: list[PendingToolCall] = []
        final: StepOutcome | None = None  # the last step, stored with the run's end
        active.started = True
        # Set as the run is driven, so that time paused for client tools does not count.
        limit, clock = self.settings.deadline_s(active.agent), asyncio.get_running_loop().time
        began, deadline = clock(), asyncio.timeout(limit - active.run_seconds)
        try:
            if active.stop_status is not None:  # cancelled before the task got to run
                raise asyncio.CancelledError
            if prelude is not None:
                await prelude(active)
            session = await self._session(active)
            provider = providers.create(active.agent, self.provider_ctx)
            ctx = ToolContext(
                session.record.work_dir, active.session_id, active.id, self.settings.tools
            )
            runlog = active.log
            observe, append = active.observe, runlog.emit

            def emit(event: Event) -> Awaitable[None] | None:
                if type(event) is MessageStart:
                    event.run_id = active.id
                observe(event)
                append(event)
                if type(event) is MessageStart:
                    self._record_usage(active)
                return runlog.room() if runlog.crowded else None

            steps = run_loop(session, provider, ctx, self.settings.loop, emit, first_step)
            async with deadline:
                async for outcome in steps:
                    if outcome.final and not outcome.pending and active.scratch is None:
                        final, stop_reason = outcome, outcome.stop_reason  # the loop ends here
                        continue
                    await self._persist(active, outcome)
                    stop_reason, pending = outcome.stop_reason, outcome.pending
            if pending:
                status = "requires_action"
        except asyncio.CancelledError:
            status = active.stop_status or "cancelled"
            error = ErrorInfo(status, stop_message(status))
        except ProviderError as exc:
            status, error = "failed", ErrorInfo("provider_error", exc.message)
        except ApiError as exc:
            status, error = "failed", ErrorInfo(exc.type, exc.message)
        except TimeoutError as exc:
            status, error = "failed", _timed_out(exc, deadline, limit, active.id)
        except Exception as exc:
            log.exception("run %s failed", active.id)
            status = "failed"
            error = ErrorInfo(
                "internal_error", f"the run failed inside the server: {type(exc).__name__}"
            )
        active.run_seconds += clock() - began
        await self._finish(active, status, stop_reason, error, pending, final)

    async def _session(self, active: ActiveRun) -> Session:
        if active.scratch is not None:
            return active.scratch
        record = active.record or await self.store.sessions.get(active.session_id)
        if active.begun is not None:
            count, latest = active.begun.message_count, active.begun.message
            history = await self.histories.load(record.id, count, latest)
        else:
            history = await self.histories.load(record.id, record.message_count)
        return Session(record, active.agent, history, active.request.tools)

    def _record_usage(self, active: ActiveRun) -> None:
        if active.scratch is not None:
            return
        delta = active.unrecorded()
        rid, sid = active.id, active.session_id
        written = self.store.db.submit_later(lambda conn: run_ops.add_usage(conn, rid, sid, delta))
        written.add_done_callback(_log_failure)
        active.usage_write = (written, delta)

    def _take_back_usage(self, active: ActiveRun) -> None:
        """A step's input usage not yet taken by the writer goes into the write being made
        instead: a fast turn's usage costs no statements of its own."""
        queued, active.usage_write = active.usage_write, None
        if queued is not None and self.store.db.withdraw(queued[0]):
            active.unrecord(queued[1])

    async def _persist(self, active: ActiveRun, outcome: StepOutcome) -> None:
        """Store a step before the loop asks the model anything more. Every step comes here
        but a run's last, which `_finish` stores with the run's end (a step paused for client
        tools, and every step of a run that writes nothing, do come here). The step's
        tool_result events are held and shown once it is committed, since a result a client has
        seen must never be lost to a crash."""
        self._take_back_usage(active)
        step = active.settle(outcome)
        held = active.log.hold(outcome.shown)  # committed with the step, shown after it
        try:
            if active.scratch is not None:
                active.messages.extend(ephemeral.messages(active, step.entries, step.now))
            else:
                rid, sid = active.id, active.session_id
                written = self.store.db.submit(lambda conn: run_ops.add_step(conn, rid, sid, step))
                self._stored(active, await self._committed(written))
        finally:
            active.log.release(held)
        active.run.steps += 1

    def _stored(self, active: ActiveRun, messages: list[Message]) -> None:
        active.messages.extend(messages)
        self.histories.extend(active.session_id, messages)

    async def _finish(
        self,
        active: ActiveRun,
        status: str,
        stop_reason: str | None,
        error: ErrorInfo | None,
        pending: list[PendingToolCall],
        final: StepOutcome | None = None,
    ) -> None:
        """End the run: its closing events, its end stored, the session released.

        The run's last step (`final`) is stored together with its end, in one write, so that a
        turn costs one commit less (bench turns). The step's tool_result events and the closing
        events are then numbered and buffered for the event log at once (so they commit with
        the end, or before it) but shown to readers only once the write is committed: a client
        that reads the history on `done` finds the whole turn there. Otherwise (no step left to
        store) they go out at once, and the end is written after them."""
        active.finishing = True  # from here on a cancel waits instead of interrupting
        self._take_back_usage(active)
        step = active.settle(final) if final is not None else None
        if step is not None:
            active.run.steps += 1
        usage = active.live_usage()
        if status in ("cancelled", "interrupted"):
            stop_reason = stop_reason if stop_reason == "requires_action" else status
        closing: list[Event] = [] if error is None else [Error(error)]
        if status == "requires_action":
            closing.append(RequiresAction(active.id, pending))
        closing.append(Done(usage, active.run.steps, active.id, stop_reason, status))
        held: list[Row] = []
        if step is not None:
            assert final is not None
            held = active.log.hold([*final.shown, *closing])
        else:
            for event in closing:
                active.log.emit(event)
        was_running = self.running.get(active.session_id) is active
        session_status = _session_status(status) if was_running else None
        end = run_ops.Finish(
            status=status,
            stop_reason=stop_reason,
            error=error,
            usage=active.unrecorded(),
            pending=pending,
            session_status=session_status,
        )
        end.run_seconds = active.run_seconds
        stamp = now()
        rid, sid = active.id, active.session_id
        written: asyncio.Future[list[Message]] | None = None
        if active.scratch is None:
            written = self.store.db.submit(
                lambda conn: run_ops.finish(conn, rid, sid, end, stamp, step)
            )
        # The session is free as soon as `done` is out: a client that sends its next message
        # on seeing it must not get session_busy. Writes queued from now on commit after ours.
        # The run stays readable from memory until its end is committed.
        if step is None:
            self._release(active)
            self._start_next(sid)
        try:
            if written is not None:
                stored = await self._committed(written)
                if step is not None:
                    self._stored(active, stored)
        except asyncio.CancelledError:
            pass  # the end is recorded (see _committed); `done` must still be set
        except Exception:
            log.exception("could not record the end of run %s", rid)
        if step is not None:
            self._release(active)
            self._start_next(sid)
            active.log.release(held)
        run = active.run
        active.run = msgspec.structs.replace(
            run,
            status=status,
            stop_reason=stop_reason,
            error=error,
            usage=usage,
            pending_tool_calls=pending,
            finished_at=None if status == "requires_action" else stamp,
        )
        active.log.finish()
        active.done.set()
        self.runs.pop(active.id, None)

    async def _committed(self, written: asyncio.Future[T]) -> T:
        """Wait for a write even if the run is cancelled meanwhile, then let the cancel
        through. Cancelling the task cancels the future it awaits, not the write: a flush
        queued behind the write tells when it is committed."""
        try:
            return await written
        except asyncio.CancelledError:
            if written.cancelled():
                await asyncio.shield(self.store.db.flush())
            raise

    def _start_next(self, session_id: str) -> None:
        queue = self.queues.get(session_id)
        if not queue or session_id in self.running or not self.accepting:
            return
        nxt = queue.popleft()
        if not queue:
            del self.queues[session_id]
        self.running[session_id] = nxt
        drive = self._drive(nxt, prelude=self._begin_queued)
        nxt.task = asyncio.create_task(drive, name=f"run-{nxt.id}")

    async def _begin_queued(self, active: ActiveRun) -> None:
        """A queued run's turn: its message enters the history now, then it runs."""
        stamp = now()
        rid, sid, content = active.id, active.session_id, active.request.content
        active.begun = await self._committed(
            self.store.db.submit(lambda conn: run_ops.begin(conn, rid, sid, content, stamp))
        )
        active.messages.append(active.begun.message)
        active.run = msgspec.structs.replace(active.run, status="running", started_at=stamp)

    # -- cancelling -----------------------------------------------------------------------
    async def cancel(self, active: ActiveRun, status: str = "cancelled") -> None:
        """Stop a run and wait until it has stopped (its `done` is out and recorded)."""
        if active.done.is_set():
            return
        if active.stop_status is None and not active.finishing:
            active.stop_status = status
            if active.task is not None:
                if active.started:  # else _drive sees stop_status as soon as it starts
                    active.task.cancel()
            else:  # still queued: it never started
                self._forget(active)
                await self._finish(
                    active, status, None, ErrorInfo(status, stop_message(status)), []
                )
                return
        await active.done.wait()

    async def cancel_run(self, run: Run) -> None:
        """Cancel by the client: an active run stops; a paused one is closed; a finished one
        stays as it is."""
        active = self.runs.get(run.id)
        if active is not None:
            await self.cancel(active)
        elif run.status == "requires_action":
            paused = await self.store.runs.get(run.id)
            await self.pauses.close(paused, "cancelled")

    async def resume(
        self, session_key: str, run_id: str, supplied: list[ToolResultBlock]
    ) -> ActiveRun:
        return await self.pauses.resume(session_key, run_id, supplied)

    def session_created(self, record: SessionRecord) -> None:
        """A session just created: its first message needs not read the record back."""
        self.admission.records.keep(record.id, record)

    async def stop_session(self, session_id: str) -> None:
        """Before a session is deleted: stop its runs and close its watchers."""
        for active in [a for a in self.runs.values() if a.session_id == session_id]:
            await self.cancel(active)
        self.hub.end_session(session_id)
        self.histories.forget(session_id)
        self.admission.records.forget(session_id)

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
        self.accepting = False
        for queue in list(self.queues.values()):
            for active in list(queue):
                await self.cancel(active, "interrupted")
        waiting = [active.done.wait() for active in self.runs.values()]
        if waiting:
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in waiting], timeout=self.settings.shutdown_grace_s
            )
        await asyncio.gather(*(self.cancel(a, "interrupted") for a in list(self.runs.values())))
        self.hub.close()

    # -- reading a run's events --------------------------------------------------------------
    def follow(self, run_id: str, after: int, ping_s: float) -> AsyncIterator[list[Row]]:
        return self.followers.follow(run_id, after, ping_s)

    def watch(
        self, session_id: str, position: tuple[str, int] | None, ping_s: float
    ) -> AsyncIterator[list[Row]]:
        return self.followers.watch(session_id, position, ping_s)

    async def recover(self) -> int:
        return await interrupt_unfinished(self.store)


def _timed_out(
    exc: TimeoutError, deadline: asyncio.Timeout, limit_s: float, run_id: str
) -> ErrorInfo:
    """The run's deadline passed, or (not expired) a TimeoutError came from below."""
    if deadline.expired():
        message = f"the run went over its deadline of {limit_s:g} s (max_run_seconds; time "
        return ErrorInfo("run_limit", message + "paused for client tools does not count)")
    log.error("run %s failed", run_id, exc_info=exc)
    return ErrorInfo("internal_error", f"the run failed inside the server: {type(exc).__name__}")


def _session_status(status: str) -> str:
    return {"failed": "failed", "requires_action": "requires_action"}.get(status, "idle")


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("background write failed: %s", future.exception())
