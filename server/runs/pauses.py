"""Runs paused for client tools: the model called a tool the client runs itself, so the run
waits (status `requires_action`, surviving restarts) until the client posts the results, a
new message abandons it, or it is cancelled."""

from __future__ import annotations

import asyncio

import msgspec

from server.errors import Conflict, InvalidRequest, SessionBusy
from server.events import Done, Error, ToolResult
from server.ids import now
from server.models import (
    ContentBlock,
    ErrorInfo,
    Message,
    PendingToolCall,
    Run,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)
from server.runs import agentspec
from server.runs.active import ActiveRun, RunRequest
from server.runs.driver import Driver
from server.runs.peers import PASSING_S, Peers
from server.runs.stops import stop_message
from server.runs.table import LiveRuns
from server.session import answer_all
from server.store import Finish, Store, StoredRun
from server.tools.base import ToolSettings


class Pauses:
    def __init__(self, store: Store, table: LiveRuns, driver: Driver, tools: ToolSettings) -> None:
        self.store = store
        self.table = table
        self.driver = driver
        self.tools = tools
        self.peers: Peers | None = None  # the other processes on a shared database

    async def close(self, paused: StoredRun, status: str) -> None:
        """End a run paused for client tools: calls without a result get error results (the
        history stays valid for a model), and its event log ends with `error` and `done`."""
        run = paused.run
        calls = [ToolUseBlock(c.id, c.name, c.input) for c in run.pending_tool_calls]
        missing = answer_all(calls, f"no result supplied: the run was {status}")
        results, _ = await self.in_call_order(run.id, [*paused.held, *missing])
        first_seq = await self.store.events.last_seq(run.id) + 1
        runlog = self.driver.new_log(run.id, run.session_id, first_seq)
        error = ErrorInfo(status, stop_message(status))
        runlog.emit(Error(error))
        runlog.emit(Done(run.usage, run.steps, run.id, "requires_action", status))
        end = Finish(
            status=status,
            stop_reason="requires_action",
            error=error,
            usage=Usage(),
            pending=[],
            session_status="idle",
        )
        await self.store.runs.close(run.id, run.session_id, results, end, now())
        runlog.finish()

    async def in_call_order(
        self, run_id: str, results: list[ContentBlock]
    ) -> tuple[list[ContentBlock], list[Message]]:
        """Tool results ordered as the run's last assistant message called them, and the
        run's messages so far."""
        messages = await self.store.messages.of_run(run_id)
        calls = [
            block.id
            for message in messages
            if message.role == "assistant"
            for block in message.content
            if isinstance(block, ToolUseBlock)
        ]
        rank = {call_id: i for i, call_id in enumerate(calls)}
        ordered = sorted(results, key=lambda b: rank.get(getattr(b, "tool_use_id", ""), len(rank)))
        return ordered, messages

    async def resume(
        self, tenant: str, session_key: str, run_id: str, supplied: list[ToolResultBlock]
    ) -> ActiveRun:
        """A run paused for client tools gets their results and goes on from its next step."""
        self.table.check_open()
        record = await self.store.sessions.get(session_key, tenant)
        ending = self.table.get(run_id)
        if ending is not None and ending.finishing and ending.session_id == record.id:
            # Its `requires_action` and `done` are out before its end is stored: a client
            # that answers at once waits for that end, not a 409.
            await ending.done.wait()
        paused = await self.store.runs.get(run_id, record.id)
        run = paused.run
        if run.status != "requires_action" or self.table.get(run.id) is not None:
            raise Conflict(f"run {run.id} is {run.status}, not waiting for tool results")
        check_results(run.pending_tool_calls, supplied)
        blocker = self.table.blocker(record.id)
        if blocker is not None:
            raise SessionBusy(
                f"session {record.id} is busy with run {blocker.id}", run_id=blocker.id
            )
        if self.peers is not None and self.peers.shared and not self.peers.holds(record.id):
            try:
                paused, run = await self._leased(paused, record.id)
            except BaseException:
                self.peers.release(record.id)
                raise
        try:
            return await self._resume(record.id, paused, run, supplied)
        except BaseException:
            if self.peers is not None:
                self.peers.release(record.id)  # (kept while the resumed run holds it)
            raise

    async def _leased(self, paused: StoredRun, sid: str) -> tuple[StoredRun, Run]:
        """On a shared database a resumed run takes its session's lease like a new run, so
        two processes never run one session at once: refused while another process holds
        it; and the run read again once the lease is held, since another process may have
        resumed it meanwhile."""
        assert self.peers is not None
        if not await self.peers.acquire(sid):
            try:  # the process that paused it may be letting the session go as it stores that
                await asyncio.wait_for(self.peers.wait_free(sid), PASSING_S)
            except TimeoutError:
                raise SessionBusy(
                    f"session {sid} is busy on another process; retry later",
                    run_id=paused.run.id,
                ) from None
        paused = await self.store.runs.get(paused.run.id, sid)
        run = paused.run
        if run.status != "requires_action" or self.table.get(run.id) is not None:
            raise Conflict(f"run {run.id} is {run.status}, not waiting for tool results")
        return paused, run

    async def _resume(
        self, sid: str, paused: StoredRun, run: Run, supplied: list[ToolResultBlock]
    ) -> ActiveRun:
        request = msgspec.convert({**paused.options, "content": []}, RunRequest)
        agent = await self.store.agents.get(run.agent_id, None)
        agent = agentspec.offered(agent, self.tools)
        agent = agentspec.for_request(agent, request.system, request.max_tokens)
        first_seq = await self.store.events.last_seq(run.id) + 1
        active = ActiveRun(
            msgspec.structs.replace(run, status="running", pending_tool_calls=[]),
            request,
            agent,
            self.driver.new_log(run.id, sid, first_seq),
        )
        active.completed = active.recorded = run.usage
        active.run_seconds = paused.run_seconds
        self.table.claim(active)  # Conflict if another resume won the race meanwhile
        results, earlier = await self.in_call_order(run.id, [*paused.held, *supplied])
        stamp = now()
        try:
            message = await self.store.runs.resume(run.id, sid, results, stamp)
        except BaseException:
            self.table.drop(active)
            raise
        active.messages += [*earlier, message]
        names = {c.id: c.name for c in run.pending_tool_calls}
        for result in supplied:
            active.log.emit(
                ToolResult(
                    result.tool_use_id, names[result.tool_use_id], result.content, result.is_error
                )
            )
        self.driver.start(active, run.steps)
        return active


def check_results(pending: list[PendingToolCall], supplied: list[ToolResultBlock]) -> None:
    """Exactly one result for each pending call: anything else is a 400 naming the ids."""
    wanted = {call.id for call in pending}
    ids = [result.tool_use_id for result in supplied]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    unknown = sorted(set(ids) - wanted)
    missing = sorted(wanted - set(ids))
    problems = []
    if duplicates:
        problems.append(f"duplicate tool_use_id {', '.join(duplicates)}")
    if unknown:
        problems.append(f"unknown tool_use_id {', '.join(unknown)}")
    if missing:
        problems.append(f"missing results for {', '.join(missing)}")
    if problems:
        raise InvalidRequest("; ".join(problems), field="results")
