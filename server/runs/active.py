"""A run the server is working on: its request, its live event log, its usage so far."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import msgspec

from server.events import Event, InputJsonDelta, MessageDelta, MessageStart, TextDelta
from server.ids import now
from server.loop import StepOutcome
from server.models import Agent, ClientTool, ContentBlock, Message, Run, SessionRecord, Usage
from server.runs.runlog import RunLog
from server.runs.signals import Flag
from server.session import Session
from server.store import Begun, Step

IfBusy = Literal["reject", "queue", "interrupt"]


class RunRequest(msgspec.Struct):
    content: list[ContentBlock]
    agent_id: str | None = None
    if_busy: IfBusy = "reject"
    cancel_on_disconnect: bool = False
    tools: list[ClientTool] = []
    # for this run only: a system prompt added after the agent's, a cap on a step's tokens
    system: str | None = None
    max_tokens: int | None = None
    metadata: dict[str, Any] = {}  # the client's, kept with the run's options


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
        self.started = False
        self.finishing = False
        self.messages: list[Message] = []
        self.done = Flag()
        self.completed = Usage()  # usage of finished steps
        self.step = Usage()  # the current step's usage so far
        self.recorded = Usage()  # what the database holds for this run
        # a usage write queued to ride with the next commit, and the usage it adds
        self.usage_write: tuple[asyncio.Future[None], Usage] | None = None
        # The session as read when the run was submitted, and the run's user message as
        # stored: with both, starting the run reads nothing (None: read them then).
        self.record: SessionRecord | None = None
        self.begun: Begun | None = None
        self.run_seconds = 0.0  # driven so far: a resumed run's earlier parts
        self.queued_at = time.monotonic()
        self.tool_inputs: list[dict[str, Any]] = []  # only kept for --log-content

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def session_id(self) -> str:
        return self.run.session_id

    def live_usage(self) -> Usage:
        return self.completed + self.step

    def unrecord(self, usage: Usage) -> None:
        """A write of `usage` was taken back: it is for the next write to record."""
        self.recorded = Usage(
            self.recorded.input_tokens - usage.input_tokens,
            self.recorded.output_tokens - usage.output_tokens,
        )

    def unrecorded(self) -> Usage:
        live = self.live_usage()
        delta = Usage(
            live.input_tokens - self.recorded.input_tokens,
            live.output_tokens - self.recorded.output_tokens,
        )
        self.recorded = live
        return delta

    def settle(self, outcome: StepOutcome) -> Step:
        """A step is complete: count its usage, and say what to store."""
        self.completed = self.completed + outcome.usage
        self.step = Usage()
        entries: list[tuple[Any, list[ContentBlock]]] = [("assistant", outcome.assistant)]
        if outcome.results and not outcome.pending:
            entries.append(("user", list(outcome.results)))
        held = list(outcome.results) if outcome.pending else None
        counted: list[int | None] = [outcome.usage.output_tokens or None]
        return Step(entries, self.unrecorded(), outcome.tool_calls, now(), held, counted=counted)

    def observe(self, event: Event) -> None:
        kind = type(event)
        if kind is TextDelta or kind is InputJsonDelta:
            self.step.output_tokens += 1
            return
        match event:
            case MessageStart(message=info):
                self.step = Usage(info.usage.input_tokens, info.usage.output_tokens)
            case MessageDelta(usage=usage):
                self.step = Usage(
                    max(usage.input_tokens, self.step.input_tokens), usage.output_tokens
                )
