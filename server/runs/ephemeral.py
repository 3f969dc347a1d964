"""Ephemeral runs (no_persistence): the whole run lives in memory and nothing reaches the
database; it is gone once its readers let go of it."""

from __future__ import annotations

from typing import Any

import msgspec

from server.events import EventRow
from server.ids import new_ulid
from server.models import Agent, ContentBlock, Message, Run, new_messages, new_session_record
from server.runs import agentspec
from server.runs.active import ActiveRun, RunRequest
from server.runs.runlog import RunLog
from server.session import Session


def prepare(
    agent: Agent, work_dir: str | None, history: list[Message], request: RunRequest
) -> ActiveRun:
    record = msgspec.structs.replace(
        new_session_record(agent.id, work_dir), status="running", message_count=len(history)
    )
    sid, stamp = record.id, record.created_at
    run = Run(new_ulid(), sid, agent.id, "running", stamp, started_at=stamp)
    (user,) = new_messages(sid, len(history) + 1, [("user", request.content)], run.id, stamp)
    agent = agentspec.for_request(agent, request.system, request.max_tokens)
    scratch = Session(record, agent, [*history, user], request.tools)
    active = ActiveRun(run, request, agent, RunLog(run.id, sid, 1, _discard, _unpublished), scratch)
    active.messages.append(user)
    return active


def messages(
    active: ActiveRun, entries: list[tuple[Any, list[ContentBlock]]], stamp: str
) -> list[Message]:
    """A completed step's messages, numbered on from the in-memory history."""
    assert active.scratch is not None
    first = active.scratch.record.message_count + len(active.messages) + 1
    return new_messages(active.session_id, first, entries, active.id, stamp)


def _discard(rows: Any) -> None:
    return None


def _unpublished(session_id: str, row: EventRow) -> None:
    return None
