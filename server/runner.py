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
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import msgspec

from server import providers
from server.errors import ApiError, Archived, Conflict, ProviderError, SessionBusy, ShuttingDown
from server.events import Done, Error, Event, InputJsonDelta, MessageDelta, MessageStart, TextDelta
from server.hub import Hub
from server.ids import new_ulid, now
from server.loop import LoopSettings, StepOutcome, run_loop
from server.models import (
    Agent,
    ClientTool,
    ContentBlock,
    ErrorInfo,
    Message,
    PendingToolCall,
    Run,
    RunStatus,
    SessionRecord,
    ToolUseBlock,
    Usage,
)
from server.providers.base import ProviderContext
from server.recovery import interrupt_unfinished
from server.runlog import Row, RunLog
from server.session import Session, answer_all
from server.store import Store
from server.store import messages as message_ops
from server.store import runs as run_ops
from server.tools.base import ToolContext, ToolSettings

log = logging.getLogger("sessiond.runner")
IfBusy = Literal["reject", "queue", "interrupt"]
REPLAY_PAGE = 2000


class RunRequest(msgspec.Struct):
    content: list[ContentBlock]
    agent_id: str | None = None
    if_busy: IfBusy = "reject"
    cancel_on_disconnect: bool = False
    tools: list[ClientTool] = []


class RunnerSettings(msgspec.Struct, frozen=True):
    loop: LoopSettings = LoopSettings()
    tools: ToolSettings = ToolSettings()
    shutdown_grace_s: float = 10.0


class ActiveRun:
    """A run the server is working on (or has queued), with its live event log."""

    def __init__(
        self,
        run: Run,
        request: RunRequest,
        agent: Agent,
        runlog: RunLog,
        scratch: Session | None = None,
    ) -> None:
        self.run = run
        # An ephemeral run (no_persistence) carries its session here and writes nothing.
        self.scratch = scratch
        self.request = request
        self.agent = agent
        self.log = runlog
        self.task: asyncio.Task[None] | None = None
        self.stop_status: str | None = None
        self.messages: list[Message] = []
        self.done = asyncio.Event()
        self.completed = Usage()  # usage of finished steps
        self.step = Usage()  # the current step's usage so far
        self.recorded = Usage()  # what the database holds for this run

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def session_id(self) -> str:
        return self.run.session_id

    def live_usage(self) -> Usage:
        return self.completed + self.step

    def unrecorded(self) -> Usage:
        live = self.live_usage()
        delta = Usage(
            live.input_tokens - self.recorded.input_tokens,
            live.output_tokens - self.recorded.output_tokens,
        )
        self.recorded = live
        return delta

    def observe(self, event: Event) -> None:
        match event:
            case MessageStart(message=info):
                self.step = Usage(info.usage.input_tokens, info.usage.output_tokens)
            case TextDelta() | InputJsonDelta():
                self.step.output_tokens += 1
            case MessageDelta(usage=usage):
                self.step = Usage(
                    max(usage.input_tokens, self.step.input_tokens), usage.output_tokens
                )


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
        self.keys: dict[str, str] = {}  # idempotency keys of runs being started
        self.accepting = True
        self._drain: asyncio.Future[None] | None = None

    # -- starting runs ----------------------------------------------------------------------
    async def submit(
        self, session_key: str, request: RunRequest, idempotency_key: str | None = None
    ) -> ActiveRun | Run:
        """Start (or queue) a run. A repeated idempotency key returns the first run instead."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down; retry shortly")
        record = await self.store.sessions.get(session_key)
        if record.archived_at:
            raise Archived(f"session {record.id} is archived; unarchive it to send messages")
        if idempotency_key:
            earlier = await self._earlier(idempotency_key, record.id)
            if earlier is not None:
                return earlier
        agent = await self.store.agents.get(request.agent_id or record.agent_id)
        return await self._open(record, agent, request, idempotency_key)

    async def _earlier(self, key: str, session_id: str) -> ActiveRun | Run | None:
        run_id = self.keys.get(key)
        if run_id is not None and run_id in self.runs:
            found: ActiveRun | Run = self.runs[run_id]
        else:
            stored = await self.store.runs.by_idempotency_key(key)
            if stored is None:
                return None
            found = self.runs.get(stored.id, stored)
        owner = found.session_id
        if owner != session_id:
            raise Conflict("this Idempotency-Key was already used for another session")
        return found

    async def _open(
        self, record: SessionRecord, agent: Agent, request: RunRequest, key: str | None
    ) -> ActiveRun:
        sid = record.id
        busy = self.running.get(sid)
        queue = self.queues.setdefault(sid, deque())
        if (busy or queue) and request.if_busy == "reject":
            blocker = busy or queue[0]
            raise SessionBusy(
                f"session {sid} is busy with run {blocker.id}; retry later, or send "
                '"if_busy": "queue" or "interrupt"',
                run_id=blocker.id,
            )
        if key is not None and key in self.keys:
            raise Conflict("a run with this Idempotency-Key is being started; retry")
        created = now()
        status: RunStatus = "queued" if (busy or queue) else "running"
        run = Run(
            new_ulid(),
            sid,
            agent.id,
            status,
            0,
            Usage(),
            None,
            None,
            [],
            [],
            None,
            created,
            created if status == "running" else None,
            None,
        )
        active = ActiveRun(run, request, agent, self._runlog(run.id, sid, 1))
        self.runs[run.id] = active
        if status == "running":
            self.running[sid] = active
        elif request.if_busy == "interrupt":
            queue.appendleft(active)
        else:
            queue.append(active)
        if key:
            self.keys[key] = run.id
        new = run_ops.NewRun(
            run.id, sid, agent.id, status, request.content, _options(request), key, created
        )
        try:
            message = await self.store.db.write(lambda conn: run_ops.start(conn, new))
        except BaseException:
            self._forget(active)
            raise
        finally:
            if key:
                self.keys.pop(key, None)
        if message is not None:
            active.messages.append(message)
            active.task = asyncio.create_task(self._drive(active), name=f"run-{run.id}")
        elif request.if_busy == "interrupt" and busy is not None:
            await self.cancel(busy, "interrupted")
        return active

    async def run_ephemeral(
        self, agent: Agent, work_dir: str | None, history: list[Message], request: RunRequest
    ) -> ActiveRun:
        """Run with nothing written to the database: events and messages live in memory only,
        for as long as a reader holds the returned run."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down; retry shortly")
        stamp = now()
        sid = new_ulid()
        record = SessionRecord(
            sid,
            None,
            agent.id,
            work_dir,
            None,
            [],
            {},
            "running",
            len(history),
            0,
            Usage(),
            None,
            None,
            None,
            None,
            None,
            stamp,
            stamp,
        )
        run = Run(
            new_ulid(),
            sid,
            agent.id,
            "running",
            0,
            Usage(),
            None,
            None,
            [],
            [],
            None,
            stamp,
            stamp,
            None,
        )
        user = Message(new_ulid(), sid, len(history) + 1, "user", request.content, run.id, stamp)
        scratch = Session(record, agent, [*history, user], request.tools)
        runlog = RunLog(run.id, sid, 1, _discard, _discard_item)
        active = ActiveRun(run, request, agent, runlog, scratch)
        active.messages.append(user)
        self.runs[run.id] = active
        active.task = asyncio.create_task(self._drive(active), name=f"run-{run.id}")
        return active

    def _runlog(self, run_id: str, session_id: str, first_seq: int) -> RunLog:
        return RunLog(run_id, session_id, first_seq, self.store.db.append_events, self.hub.publish)

    def _forget(self, active: ActiveRun) -> None:
        self.runs.pop(active.id, None)
        if self.running.get(active.session_id) is active:
            del self.running[active.session_id]
        queue = self.queues.get(active.session_id)
        if queue is not None and active in queue:
            queue.remove(active)
        if queue is not None and not queue:
            del self.queues[active.session_id]

    def queue_position(self, run_id: str) -> int | None:
        active = self.runs.get(run_id)
        if active is None or active.run.status != "queued":
            return None
        queue = self.queues.get(active.session_id, deque())
        return list(queue).index(active) + 1 if active in queue else None

    # -- driving a run ----------------------------------------------------------------------
    async def _drive(self, active: ActiveRun) -> None:
        status, stop_reason, error = "completed", None, None
        pending: list[PendingToolCall] = []
        try:
            session = await self._session(active)
            provider = providers.create(active.agent, self.provider_ctx)
            ctx = ToolContext(
                session.record.work_dir, active.session_id, active.id, self.settings.tools
            )
            async for item in run_loop(session, provider, ctx, self.settings.loop):
                if isinstance(item, StepOutcome):
                    await self._persist(active, item)
                    stop_reason, pending = item.stop_reason, item.pending
                else:
                    active.observe(item)
                    active.log.emit(item)
                    if isinstance(item, MessageStart):
                        self._record_usage(active)
            if pending:
                status = "requires_action"
        except asyncio.CancelledError:
            status = active.stop_status or "cancelled"
            error = ErrorInfo(status, _stop_message(status))
        except ProviderError as exc:
            status, error = "failed", ErrorInfo("provider_error", exc.message)
        except ApiError as exc:
            status, error = "failed", ErrorInfo(exc.type, exc.message)
        except Exception as exc:
            log.exception("run %s failed", active.id)
            status = "failed"
            error = ErrorInfo(
                "internal_error", f"the run failed inside the server: {type(exc).__name__}"
            )
        await self._finish(active, status, stop_reason, error, pending)

    async def _session(self, active: ActiveRun) -> Session:
        if active.scratch is not None:
            return active.scratch
        record = await self.store.sessions.get(active.session_id)
        history = await self.store.messages.history(active.session_id)
        return Session(record, active.agent, history, active.request.tools)

    def _record_usage(self, active: ActiveRun) -> None:
        if active.scratch is not None:
            return
        delta = active.unrecorded()
        rid, sid = active.id, active.session_id
        self._background(lambda conn: run_ops.add_usage(conn, rid, sid, delta))

    def _background(self, op: Callable[[Any], Any]) -> None:
        task = asyncio.ensure_future(self.store.db.write(op))
        task.add_done_callback(_log_failure)

    async def _persist(self, active: ActiveRun, outcome: StepOutcome) -> None:
        active.completed = active.completed + outcome.usage
        active.step = Usage()
        delta = active.unrecorded()
        entries: list[tuple[Any, list[ContentBlock]]] = [("assistant", outcome.assistant)]
        if outcome.results and not outcome.pending:
            entries.append(("user", list(outcome.results)))
        stamp = now()
        rid, sid = active.id, active.session_id

        def op(conn: Any) -> list[Message]:
            return run_ops.add_step(conn, rid, sid, entries, delta, outcome.tool_calls, stamp)

        if active.scratch is not None:
            stored = _in_memory(active, entries, stamp)
        else:
            stored = await _uncancellable(self.store.db.write(op))
        active.messages.extend(stored)
        active.run.steps += 1

    async def _finish(
        self,
        active: ActiveRun,
        status: str,
        stop_reason: str | None,
        error: ErrorInfo | None,
        pending: list[PendingToolCall],
    ) -> None:
        usage = active.live_usage()
        if error is not None:
            active.log.emit(Error(error))
        if status in ("cancelled", "interrupted"):
            stop_reason = stop_reason if stop_reason == "requires_action" else status
        active.log.emit(Done(usage, active.run.steps, active.id, stop_reason, status))
        was_running = self.running.get(active.session_id) is active
        session_status = _session_status(status) if was_running else None
        end = run_ops.Finish(
            status, stop_reason, error, active.unrecorded(), pending, session_status
        )
        stamp = now()
        rid, sid = active.id, active.session_id
        try:
            if active.scratch is None:
                await self.store.db.write(lambda conn: run_ops.finish(conn, rid, sid, end, stamp))
        except Exception:
            log.exception("could not record the end of run %s", rid)
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
        self._forget(active)
        self._start_next(sid)

    def _start_next(self, session_id: str) -> None:
        queue = self.queues.get(session_id)
        if not queue or session_id in self.running or not self.accepting:
            return
        nxt = queue.popleft()
        if not queue:
            del self.queues[session_id]
        self.running[session_id] = nxt
        nxt.task = asyncio.create_task(self._begin_queued(nxt), name=f"run-{nxt.id}")

    async def _begin_queued(self, active: ActiveRun) -> None:
        stamp = now()
        rid, sid, content = active.id, active.session_id, active.request.content
        try:
            message = await self.store.db.write(
                lambda conn: run_ops.begin(conn, rid, sid, content, stamp)
            )
        except Exception as exc:
            log.exception("could not start queued run %s", rid)
            await self._finish(active, "failed", None, ErrorInfo("internal_error", str(exc)), [])
            return
        active.messages.append(message)
        active.run = msgspec.structs.replace(active.run, status="running", started_at=stamp)
        await self._drive(active)

    # -- cancelling -----------------------------------------------------------------------
    async def cancel(self, active: ActiveRun, status: str = "cancelled") -> None:
        """Stop a run and wait until it has stopped (its `done` is out and recorded)."""
        if active.done.is_set():
            return
        if active.stop_status is None:
            active.stop_status = status
            if active.task is not None:
                active.task.cancel()
            else:  # still queued: it never started
                self._forget(active)
                await self._finish(
                    active, status, None, ErrorInfo(status, _stop_message(status)), []
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
            await self._close_paused(run, "cancelled")

    async def _close_paused(self, run: Run, status: str) -> None:
        """End a run paused for client tools: its calls get error results, its log `done`."""
        calls = [ToolUseBlock(c.id, c.name, c.input) for c in run.pending_tool_calls]
        results = answer_all(calls, f"no result supplied: the run was {status}")
        runlog = self._runlog(
            run.id, run.session_id, await self.store.runs.last_event_seq(run.id) + 1
        )
        error = ErrorInfo(status, _stop_message(status))
        runlog.emit(Error(error))
        runlog.emit(Done(run.usage, run.steps, run.id, "requires_action", status))
        end = run_ops.Finish(status, "requires_action", error, Usage(), [], "idle")
        stamp = now()

        def op(conn: Any) -> None:
            message_ops.append(conn, run.session_id, "user", results, run.id, stamp)
            run_ops.finish(conn, run.id, run.session_id, end, stamp)

        await self.store.db.write(op)
        runlog.finish()

    async def stop_session(self, session_id: str) -> None:
        """Before a session is deleted: stop its runs and close its watchers."""
        for active in [a for a in self.runs.values() if a.session_id == session_id]:
            await self.cancel(active)
        self.hub.end_session(session_id)

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
    async def follow(self, run_id: str, after: int, ping_s: float) -> AsyncIterator[list[Row]]:
        """The run's events after `after`: replayed from the log, then live until `done`.
        Yields [] when quiet for `ping_s` seconds."""
        active = self.runs.get(run_id)
        if active is None:
            async for rows in self._replay(run_id, after, None):
                yield rows
            return
        runlog = active.log
        if after < runlog.base:
            async for rows in self._replay(run_id, after, runlog.base):
                yield rows
            after = runlog.base
        while True:
            batch = await runlog.wait(after, ping_s)
            if batch is None:
                return
            if batch:
                after = batch[-1][1]
            yield batch

    async def watch(
        self, session_id: str, position: tuple[str, int] | None, ping_s: float
    ) -> AsyncIterator[list[Row]]:
        """The session channel: live events of every run of the session. From a position
        (`run_id`, `seq`), first what came after it, then live, with no gap or duplicate."""
        watcher = self.hub.watch(session_id)
        seen: dict[str, int] = {}
        try:
            if position is not None:
                async for rows in self._catch_up(session_id, *position):
                    seen[rows[-1][0]] = rows[-1][1]
                    yield rows
            while True:
                batch = await watcher.next_batch(ping_s)
                if batch is None:
                    return
                if seen:
                    batch = [row for row in batch if row[1] > seen.get(row[0], 0)]
                    if not batch:
                        continue
                yield batch
        finally:
            self.hub.leave(watcher)

    async def _catch_up(self, session_id: str, run_id: str, seq: int) -> AsyncIterator[list[Row]]:
        for rid in await self.store.runs.ids_from(session_id, run_id):
            after = seq if rid == run_id else 0
            active = self.runs.get(rid)
            upto = active.log.base if active is not None else None
            async for rows in self._replay(rid, after, upto):
                yield rows
                after = rows[-1][1]
            if active is not None and active.log.since(after):
                yield active.log.since(after)

    async def _replay(self, run_id: str, after: int, upto: int | None) -> AsyncIterator[list[Row]]:
        while True:
            page = await self.store.runs.events(run_id, after, REPLAY_PAGE)
            rows = [(run_id, seq, type_, data) for seq, type_, data in page]
            if upto is not None:
                rows = [row for row in rows if row[1] <= upto]
            if not rows:
                return
            yield rows
            after = rows[-1][1]
            if len(page) < REPLAY_PAGE:
                return

    # -- recovery at start-up -------------------------------------------------------------
    async def recover(self) -> int:
        return await interrupt_unfinished(self.store)


def _options(request: RunRequest) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(request, content=[]))
    result.pop("content", None)
    return result


def _discard(rows: Any) -> None:
    return None


def _discard_item(session_id: str, row: Row) -> None:
    return None


def _in_memory(
    active: ActiveRun, entries: list[tuple[Any, list[ContentBlock]]], stamp: str
) -> list[Message]:
    assert active.scratch is not None
    first = active.scratch.record.message_count + len(active.messages) + 1
    return [
        Message(new_ulid(), active.session_id, first + i, role, blocks, active.id, stamp)
        for i, (role, blocks) in enumerate(entries)
    ]


def _session_status(status: str) -> str:
    return {"failed": "failed", "requires_action": "requires_action"}.get(status, "idle")


def _stop_message(status: str) -> str:
    if status == "interrupted":
        return "the run was interrupted by the server (shutdown, restart or a newer message)"
    return "the run was cancelled at the client's request"


async def _uncancellable(awaitable: Any) -> Any:
    """Wait for a write even if the run is cancelled meanwhile, then let the cancel through."""
    future = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("background write failed: %s", future.exception())
