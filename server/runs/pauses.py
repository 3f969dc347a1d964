"""Runs paused for client tools: the model called a tool the client runs itself, so the run
waits (status `requires_action`, surviving restarts) until the client posts the results, a
new message abandons it, or it is cancelled."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from server.errors import Conflict, InvalidRequest, SessionBusy, ShuttingDown
from server.events import Done, Error, ToolResult
from server.ids import now
from server.models import (
    ContentBlock,
    ErrorInfo,
    Message,
    PendingToolCall,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)
from server.runs import agentspec
from server.runs.active import ActiveRun, RunRequest
from server.runs.stops import stop_message
from server.session import answer_all
from server.store import messages as message_ops
from server.store import runs as run_ops
from server.store.runs import StoredRun

if TYPE_CHECKING:
    from server.runs.runner import Runner


class Pauses:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def close(self, paused: StoredRun, status: str) -> None:
        """End a run paused for client tools: calls without a result get error results (the
        history stays valid for a model), and its event log ends with `error` and `done`."""
        run = paused.run
        calls = [ToolUseBlock(c.id, c.name, c.input) for c in run.pending_tool_calls]
        missing = answer_all(calls, f"no result supplied: the run was {status}")
        results, _ = await self.in_call_order(run.id, [*paused.held, *missing])
        runlog = self.runner._runlog(
            run.id, run.session_id, await self.runner.store.runs.last_event_seq(run.id) + 1
        )
        error = ErrorInfo(status, stop_message(status))
        runlog.emit(Error(error))
        runlog.emit(Done(run.usage, run.steps, run.id, "requires_action", status))
        end = run_ops.Finish(
            status=status,
            stop_reason="requires_action",
            error=error,
            usage=Usage(),
            pending=[],
            session_status="idle",
        )
        stamp = now()

        def op(conn: Any) -> None:
            message_ops.append(conn, run.session_id, "user", results, run.id, stamp)
            run_ops.finish(conn, run.id, run.session_id, end, stamp)

        await self.runner.store.db.write(op)
        runlog.finish()

    async def in_call_order(
        self, run_id: str, results: list[ContentBlock]
    ) -> tuple[list[ContentBlock], list[Message]]:
        """Tool results ordered as the run's last assistant message called them, and the
        run's messages so far."""
        messages = await self.runner.store.messages.of_run(run_id)
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
        self, session_key: str, run_id: str, supplied: list[ToolResultBlock]
    ) -> ActiveRun:
        """A run paused for client tools gets their results and goes on from its next step."""
        if not self.runner.accepting:
            raise ShuttingDown("the server is shutting down; retry shortly")
        record = await self.runner.store.sessions.get(session_key)
        paused = await self.runner.store.runs.get(run_id, record.id)
        run = paused.run
        if run.status != "requires_action" or run.id in self.runner.runs:
            raise Conflict(f"run {run.id} is {run.status}, not waiting for tool results")
        check_results(run.pending_tool_calls, supplied)
        if record.id in self.runner.running or self.runner.queues.get(record.id):
            blocker = self.runner.running.get(record.id) or self.runner.queues[record.id][0]
            raise SessionBusy(
                f"session {record.id} is busy with run {blocker.id}", run_id=blocker.id
            )
        request = msgspec.convert({**paused.options, "content": []}, RunRequest)
        agent = await self.runner.store.agents.get(run.agent_id)
        agent = agentspec.offered(agent, self.runner.settings.tools)
        first_seq = await self.runner.store.runs.last_event_seq(run.id) + 1
        active = ActiveRun(
            msgspec.structs.replace(run, status="running", pending_tool_calls=[]),
            request,
            agent,
            self.runner._runlog(run.id, record.id, first_seq),
        )
        active.completed = active.recorded = run.usage
        active.run_seconds = paused.run_seconds
        if (
            record.id in self.runner.running or run.id in self.runner.runs
        ):  # lost a race while awaiting
            raise Conflict(f"run {run.id} is already being resumed")
        self.runner.running[record.id] = active
        self.runner.runs[run.id] = active
        results, earlier = await self.in_call_order(run.id, [*paused.held, *supplied])
        stamp = now()
        try:
            message = await self.runner.store.db.write(
                lambda conn: run_ops.resume(conn, run.id, record.id, results, stamp)
            )
        except BaseException:
            self.runner._forget(active)
            raise
        active.messages += [*earlier, message]
        names = {c.id: c.name for c in run.pending_tool_calls}
        for result in supplied:
            active.log.emit(
                ToolResult(
                    result.tool_use_id, names[result.tool_use_id], result.content, result.is_error
                )
            )
        active.task = asyncio.create_task(
            self.runner._drive(active, run.steps), name=f"run-{run.id}"
        )
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
