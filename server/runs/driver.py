"""Driving a run: the tool-calling loop from its first step to its end, each step stored
before the loop asks the model anything more, and its end stored exactly once whatever
happens (completed, failed, cancelled, interrupted, over its deadline). A run's events go to
its run log as the loop makes them; a step's tool results and the run's closing events are
shown only once what they report is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from server import providers
from server.compaction import fixed_tokens
from server.errors import ApiError, ProviderError
from server.events import Compaction, Done, Error, Event, EventRow, MessageStart, RequiresAction
from server.ids import now
from server.loop import LoopSettings, StepOutcome, run_loop, tool_specs
from server.meter import Meter
from server.models import Agent, ErrorInfo, Message, PendingToolCall
from server.providers.base import ProviderContext
from server.runs import ephemeral
from server.runs.active import ActiveRun
from server.runs.channel import Hub
from server.runs.compactor import Compactor
from server.runs.histories import Histories
from server.runs.runlog import RunLog
from server.runs.stops import stop_message
from server.runs.table import LiveRuns
from server.session import Session
from server.store import Finish, Store
from server.tools.base import ToolContext, ToolSettings

log = logging.getLogger("sessiond.runner")
T = TypeVar("T")
Prelude = Callable[[ActiveRun], Awaitable[None]]


class RunnerSettings(msgspec.Struct, frozen=True):
    loop: LoopSettings = LoopSettings()
    tools: ToolSettings = ToolSettings()
    shutdown_grace_s: float = 10.0
    run_max_s: float = 3600.0  # a run's deadline when its agent sets none
    run_max_ceiling_s: float = 86400.0  # … and the longest any agent gets
    # The run's end is logged with its user message and tool inputs too (--log-content).
    log_content: bool = False
    # Processes on one database: how long a dead one's leases last (see peers.py).
    lease_timeout_s: float = 15.0

    def deadline_s(self, agent: Agent) -> float:
        return min(agent.max_run_seconds or self.run_max_s, self.run_max_ceiling_s)


class Driver:
    # Keyword-only: five collaborators of like types are easy to pass in the wrong order.
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        table: LiveRuns,
        histories: Histories,
        provider_ctx: ProviderContext,
        settings: RunnerSettings,
        meter: Meter,
    ) -> None:
        self.meter = meter
        self.store = store
        self.hub = hub
        self.table = table
        self.histories = histories
        self.provider_ctx = provider_ctx
        self.settings = settings
        self.compactor = Compactor(store, histories, provider_ctx)
        self.ended: Callable[[], None] = _nothing  # after each run's end is stored
        # Told when a session has nothing left in hand here (its lease may go: peers.py).
        self.on_idle: Callable[[str], None] = _idle

    def new_log(self, run_id: str, session_id: str, first_seq: int) -> RunLog:
        """A run log whose rows go to the store's event log and the session channel."""
        return RunLog(
            run_id=run_id,
            session_id=session_id,
            first_seq=first_seq,
            sink=self.store.events.append,
            publish=self.hub.publish,
            flush=self.store.flush,
        )

    def start(self, active: ActiveRun, first_step: int = 0, prelude: Prelude | None = None) -> None:
        """Drive the run in a task of its own, from `first_step`; `prelude` runs first."""
        drive = self.drive(active, first_step, prelude)
        active.task = asyncio.create_task(drive, name=f"run-{active.id}")

    def start_next(self, session_id: str) -> None:
        """The session's next queued run, if any, starts now."""
        nxt = self.table.next_in_queue(session_id)
        if nxt is not None:
            self.start(nxt, prelude=self._begin_queued)

    async def drive(
        self,
        active: ActiveRun,
        first_step: int = 0,
        prelude: Prelude | None = None,
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

            async def compact(session: Session, forced: bool) -> bool:
                return await self._compact(active, session, forced, emit)

            steps = run_loop(session, provider, ctx, self.settings.loop, emit, first_step, compact)
            async with deadline:
                async for outcome in steps:
                    self._count(active, outcome)
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
            self.meter.provider_failed(active.agent.provider)
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

    async def _compact(
        self,
        active: ActiveRun,
        session: Session,
        forced: bool,
        emit: Callable[[Event], Awaitable[None] | None],
    ) -> bool:
        """Compact the run's session before a step (see compactor.py): the session's turns
        become the summary and the recent turns, and the run's stream gets a `compaction`
        event. A run that writes nothing is not compacted."""
        if active.scratch is not None:
            return False
        fixed = fixed_tokens(active.agent.system, tool_specs(session))
        keep = 0 if forced else None  # refused as too long: keep only the latest turn
        done = await self.compactor.compact(active.session_id, active.agent, fixed, active.id, keep)
        if done is None:
            return False
        session.replace_history(done.history)
        active.messages.append(done.entry)
        info = done.entry.compaction
        assert info is not None
        reason = "context_too_long" if forced else "budget"
        pause = emit(
            Compaction(
                done.entry.id, info.through_seq, info.tokens_before, info.tokens_after, reason
            )
        )
        if pause is not None:
            await pause
        self.meter.compacted(reason)
        return True

    def _count(self, active: ActiveRun, outcome: StepOutcome) -> None:
        usage, calls = outcome.usage, outcome.tool_calls
        self.meter.step(
            active.agent.provider,
            outcome.first_token_s,
            usage.input_tokens,
            usage.output_tokens,
            calls,
        )
        if self.settings.log_content and calls:
            active.tool_inputs.extend({"tool": c.name, "input": c.input} for c in calls)

    def _ended(self, active: ActiveRun, status: str, stop_reason: str | None) -> None:
        """The run's one count and one log line."""
        ran = time.monotonic() - active.queued_at
        self.meter.run_ended(status, None if status == "requires_action" else ran)
        usage, agent = active.run.usage, active.agent
        fields: dict[str, object] = {
            "session_id": active.session_id,
            "run_id": active.id,
            "provider": agent.provider,
            "model": agent.model,
            "status": status,
            "stop_reason": stop_reason,
            "steps": active.run.steps,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "duration_ms": round(ran * 1000, 1),
        }
        if active.run.error is not None:
            fields["error_type"] = active.run.error.type
        if self.settings.log_content:
            fields["content"] = msgspec.to_builtins(active.request.content)
            fields["tool_calls"] = active.tool_inputs
        log.info("run ended", extra={"fields": fields})

    async def _session(self, active: ActiveRun) -> Session:
        if active.scratch is not None:
            return active.scratch
        record = active.record or await self.store.sessions.get(active.session_id, None)
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
        written = self.store.runs.add_usage(rid, sid, delta)
        written.add_done_callback(_log_failure)
        active.usage_write = (written, delta)

    def _take_back_usage(self, active: ActiveRun) -> None:
        """A step's input usage not yet taken by the writer goes into the write being made
        instead: a fast turn's usage costs no statements of its own."""
        queued, active.usage_write = active.usage_write, None
        if queued is not None and self.store.withdraw(queued[0]):
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
                written = self.store.runs.add_step(rid, sid, step)
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
        held: list[EventRow] = []
        if step is not None:
            assert final is not None
            held = active.log.hold([*final.shown, *closing])
        else:
            for event in closing:
                active.log.emit(event)
        was_running = self.table.running(active.session_id) is active
        session_status = _session_status(status) if was_running else None
        end = Finish(
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
            written = self.store.runs.finish(rid, sid, end, stamp, step)
        # The session is free as soon as `done` is out: a client that sends its next message
        # on seeing it must not get session_busy. Writes queued from now on commit after ours.
        # The run stays readable from memory until its end is committed.
        if step is None:
            self.table.release(active)
            self.start_next(sid)
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
            self.table.release(active)
            self.start_next(sid)
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
        self.table.drop(active)
        self.on_idle(sid)
        self._ended(active, status, stop_reason)
        self.ended()

    async def _committed(self, written: asyncio.Future[T]) -> T:
        """Wait for a write even if the run is cancelled meanwhile, then let the cancel
        through. Cancelling the task cancels the future it awaits, not the write: a flush
        queued behind the write tells when it is committed."""
        try:
            return await written
        except asyncio.CancelledError:
            if written.cancelled():
                await asyncio.shield(self.store.flush())
            raise

    async def _begin_queued(self, active: ActiveRun) -> None:
        """A queued run's turn: its message enters the history now, then it runs."""
        stamp = now()
        rid, sid, content = active.id, active.session_id, active.request.content
        active.begun = await self._committed(self.store.runs.begin(rid, sid, content, stamp))
        active.messages.append(active.begun.message)
        active.run = msgspec.structs.replace(active.run, status="running", started_at=stamp)

    async def cancel(self, active: ActiveRun, status: str = "cancelled") -> None:
        """Stop a run and wait until it has stopped (its `done` is out and recorded)."""
        if active.done.is_set():
            return
        if active.stop_status is None and not active.finishing:
            active.stop_status = status
            if active.task is not None:
                if active.started:  # else drive() sees stop_status as soon as it starts
                    active.task.cancel()
            else:  # still queued: it never started
                self.table.drop(active)
                await self._finish(
                    active, status, None, ErrorInfo(status, stop_message(status)), []
                )
                return
        await active.done.wait()


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


def _nothing() -> None:
    pass


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("background write failed: %s", future.exception())


def _idle(session_id: str) -> None:
    return None
