"""The data sessiond stores and serves: agents, sessions, messages and their content blocks, runs.

Content blocks are a tagged union so that a message's `content` is always a list of typed
blocks, whatever the client sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, Literal, TypeVar

import msgspec

from server.ids import new_ulid, now

Role = Literal["user", "assistant"]
RunStatus = Literal[
    "queued", "running", "requires_action", "completed", "failed", "cancelled", "interrupted"
]
FINISHED_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "interrupted"})


class TextBlock(msgspec.Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    text: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type", forbid_unknown_fields=True):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(
    msgspec.Struct, tag="tool_result", tag_field="type", forbid_unknown_fields=True
):
    tool_use_id: str
    content: str
    is_error: bool = False


ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock


class Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


class ErrorInfo(msgspec.Struct):
    type: str
    message: str


class ClientTool(msgspec.Struct, forbid_unknown_fields=True):
    """A tool the client runs itself: the run pauses until the client posts its result."""

    name: str
    input_schema: dict[str, Any]
    description: str = ""
    executor: Literal["client"] = "client"


ToolRef = str | ClientTool


class ToolSpec(msgspec.Struct):
    """A tool as the model sees it."""

    name: str
    description: str
    input_schema: dict[str, Any]


class Agent(msgspec.Struct):
    id: str
    name: str
    provider: str
    model: str | None
    system: str | None
    tools: list[ToolRef]
    max_steps: int
    max_tokens: int | None
    temperature: float | None
    options: dict[str, Any]
    created_at: str
    updated_at: str
    # the run's deadline in seconds (None: the server's run_max_seconds); clamped to the
    # server's run_max_seconds_ceiling
    max_run_seconds: float | None = None


class SessionRecord(msgspec.Struct):
    """A session as the API shows it (the runnable Session lives in session.py)."""

    id: str
    name: str | None
    agent_id: str
    work_dir: str | None
    title: str | None
    tags: list[str]
    metadata: dict[str, Any]
    status: str
    message_count: int
    turn_count: int
    usage: Usage
    parent_id: str | None
    forked_from_message_id: str | None
    ttl_seconds: int | None
    expires_at: str | None
    archived_at: str | None
    created_at: str
    updated_at: str


def new_session_record(
    agent_id: str,
    work_dir: str | None,
    *,
    name: str | None = None,
    title: str | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    ttl_seconds: int | None = None,
    parent_id: str | None = None,
) -> SessionRecord:
    """A new, empty, idle session (its work_dir already checked by the caller)."""
    stamp = now()
    return SessionRecord(
        id=new_ulid(),
        name=name,
        agent_id=agent_id,
        work_dir=work_dir,
        title=title,
        tags=tags or [],
        metadata=metadata or {},
        status="idle",
        message_count=0,
        turn_count=0,
        usage=Usage(),
        parent_id=parent_id,
        forked_from_message_id=None,
        ttl_seconds=ttl_seconds,
        expires_at=None,
        archived_at=None,
        created_at=stamp,
        updated_at=stamp,
    )


class Message(msgspec.Struct):
    id: str
    session_id: str
    seq: int
    role: Role
    content: list[ContentBlock]
    run_id: str | None
    created_at: str


def new_messages(
    session_id: str,
    first_seq: int,
    entries: Iterable[tuple[Role, list[ContentBlock]]],
    run_id: str | None,
    now: str,
) -> list[Message]:
    """Messages with fresh ids, numbered on from `first_seq`."""
    return [
        Message(
            id=new_ulid(),
            session_id=session_id,
            seq=seq,
            role=role,
            content=content,
            run_id=run_id,
            created_at=now,
        )
        for seq, (role, content) in enumerate(entries, first_seq)
    ]


class Turn(msgspec.Struct):
    """One history entry as a provider sees it: a role and its blocks, nothing stored."""

    role: Role
    content: list[ContentBlock]


class ToolCallRecord(msgspec.Struct):
    """A tool call a run made, as GET /runs/{id} shows it."""

    id: str
    name: str
    input: dict[str, Any]
    output_bytes: int
    is_error: bool
    duration_ms: int
    step: int


class PendingToolCall(msgspec.Struct):
    id: str
    name: str
    input: dict[str, Any]


class Run(msgspec.Struct):
    id: str
    session_id: str
    agent_id: str
    status: RunStatus
    created_at: str
    steps: int = 0
    usage: Usage = msgspec.field(default_factory=Usage)
    stop_reason: str | None = None
    error: ErrorInfo | None = None
    tool_calls: list[ToolCallRecord] = []
    pending_tool_calls: list[PendingToolCall] = []
    queue_position: int | None = None
    started_at: str | None = None
    finished_at: str | None = None


T = TypeVar("T")


KeyScope = Literal["read", "write", "admin"]


DEFAULT_TENANT = "default"  # of everything made without auth, and before tenants were
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ApiKey(msgspec.Struct):
    """An API key as lists show it: never the key itself, which is shown once when made."""

    id: str
    name: str
    scope: KeyScope  # read: GET routes; write: every route but /keys; admin: all
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None
    tenant: str = DEFAULT_TENANT  # it sees only what keys of its tenant made


class Page(msgspec.Struct, Generic[T]):
    """Every list: `{"data": [...], "next_cursor": "<opaque>" | null}`."""

    data: list[T]
    next_cursor: str | None
