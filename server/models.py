"""The data sessiond stores and serves: agents, sessions, messages and their content blocks, runs.

Content blocks are a tagged union so that a message's `content` is always a list of typed
blocks, whatever the client sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, Generic, Literal, TypeVar

import msgspec

from server.errors import InvalidRequest
from server.ids import is_ulid, new_ulid, now

Role = Literal["user", "assistant"]
# A stored message's kind: a turn of the conversation, or the summary of the turns before it.
MessageRole = Literal["user", "assistant", "compaction"]
TokenSource = Literal["estimate", "provider"]
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
    # the model's context window and the input size past which a run compacts, in tokens
    # (None: the defaults, `context_window_of` and `compact_at_of`)
    context_window: int | None = None
    compact_at: int | None = None
    summary_agent: str | None = None  # the agent whose provider writes summaries (None: own)
    webhook_url: str | None = None  # where its sessions' run ends are posted


DEFAULT_CONTEXT_WINDOW = 200_000
COMPACT_AT_SHARE = 0.8
# Context windows of models whose size is known, by the start of their name.
KNOWN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("claude-", 200_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-5", 400_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gpt-3.5-turbo", 16_385),
)


def context_window_of(agent: Agent) -> int:
    if agent.context_window is not None:
        return agent.context_window
    model = agent.model or ""
    for prefix, window in KNOWN_WINDOWS:
        if model.startswith(prefix):
            return window
    return DEFAULT_CONTEXT_WINDOW


def compact_at_of(agent: Agent) -> int:
    if agent.compact_at is not None:
        return agent.compact_at
    return int(context_window_of(agent) * COMPACT_AT_SHARE)


_encode = msgspec.json.Encoder().encode


def estimate_tokens(content: list[ContentBlock]) -> int:
    """About four characters of the blocks' JSON a token: what is counted before (or
    without) a provider's own count."""
    return max(1, len(_encode(content)) // 4)


class AgentView(Agent):
    """An agent as shown: computed when read, since a key can be set or dropped at start-up."""

    usable: bool = True
    unusable_reason: str | None = None


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
    webhook_url: str | None = None  # wins over its agent's


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


class CompactionInfo(msgspec.Struct):
    """What a `compaction` message summarises: the turns up to `through_seq` (the ones
    before an earlier compaction by way of its summary)."""

    through_seq: int
    summarised: int  # messages summarised since the compaction before
    tokens_before: int  # the provider's input before, estimated
    tokens_after: int  # … and after
    summary_agent_id: str | None = None  # the agent that wrote it (None: the session's)


class Message(msgspec.Struct):
    id: str
    session_id: str
    seq: int
    role: MessageRole
    content: list[ContentBlock]
    run_id: str | None
    created_at: str
    tokens: int = 0  # the message's size in tokens, counted as `tokens_source` says
    tokens_source: TokenSource = "estimate"
    compaction: CompactionInfo | None = None  # a `compaction` message's


def new_messages(
    session_id: str,
    first_seq: int,
    entries: Iterable[tuple[Role, list[ContentBlock]]],
    run_id: str | None,
    now: str,
    counted: Iterable[int | None] = (),
) -> list[Message]:
    """Messages with fresh ids, numbered on from `first_seq`; `counted` gives, entry by entry,
    a provider's token count (None, or left out: estimated)."""
    counts = list(counted)
    made = []
    for i, (role, content) in enumerate(entries):
        count = counts[i] if i < len(counts) else None
        made.append(
            Message(
                id=new_ulid(),
                session_id=session_id,
                seq=first_seq + i,
                role=role,
                content=content,
                run_id=run_id,
                created_at=now,
                tokens=estimate_tokens(content) if count is None else count,
                tokens_source="estimate" if count is None else "provider",
            )
        )
    return made


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


class ToolCallOut(msgspec.Struct):
    """A tool call of a blocking turn, with its output once there is one."""

    id: str
    name: str
    input: dict[str, Any]
    output: str | None
    is_error: bool


class MessageResult(msgspec.Struct):
    """The answer of a blocking turn (POST /sessions/{id}/message)."""

    response: str
    tool_calls: list[ToolCallOut]
    usage: Usage
    steps: int
    stop_reason: str | None
    status: str
    run_id: str
    session_id: str
    pending_tool_calls: list[PendingToolCall]


class RunStarted(msgspec.Struct):
    """The answer of POST /sessions/{id}/runs: where to follow the run."""

    run_id: str
    session_id: str
    status: str
    queue_position: int | None
    events_url: str


def result_of(
    run: Run, messages: list[Message], held: list[ToolResultBlock] | None = None
) -> MessageResult:
    """The blocking answer, built from the run and the messages it stored (and, for a run
    paused for client tools, the results of the server tools its last step ran)."""
    outputs: dict[str, ToolResultBlock] = {block.tool_use_id: block for block in held or []}
    calls: list[ToolUseBlock] = []
    response = ""
    for message in messages:
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                outputs[block.tool_use_id] = block
            elif isinstance(block, ToolUseBlock):
                calls.append(block)
        if message.role == "assistant":
            text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
            response = text or response
    tool_calls = [
        ToolCallOut(
            c.id,
            c.name,
            c.input,
            outputs[c.id].content if c.id in outputs else None,
            outputs[c.id].is_error if c.id in outputs else False,
        )
        for c in calls
    ]
    return MessageResult(
        response=response,
        tool_calls=tool_calls,
        usage=run.usage,
        steps=run.steps,
        stop_reason=run.stop_reason,
        status=run.status,
        run_id=run.id,
        session_id=run.session_id,
        pending_tool_calls=run.pending_tool_calls,
    )


SESSION_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
RESERVED_NAMES = frozenset({"search", "export", "import"})


def check_session_name(name: str | None) -> str | None:
    """A name must not be mistaken for an id or a route: /sessions/{key} takes either."""
    if name is None:
        return None
    if not SESSION_NAME.fullmatch(name) or not name.strip("."):
        raise InvalidRequest(
            "name must be 1 to 100 of A-Z a-z 0-9 . _ - (and not only dots)", field="name"
        )
    if is_ulid(name):
        raise InvalidRequest(f"name {name!r} looks like a session id; choose another", field="name")
    if name in RESERVED_NAMES:
        raise InvalidRequest(f"name {name!r} is reserved for a route; choose another", field="name")
    return name


def work_dir_within(work_dir: str | None, allow_roots: Iterable[str]) -> str | None:
    """A work_dir must be an existing folder under one of the allowed roots; its real path."""
    if work_dir is None:
        return None
    if not work_dir or "\x00" in work_dir:
        raise InvalidRequest("work_dir must be a folder path", field="work_dir")
    real = os.path.realpath(work_dir)
    roots = [os.path.realpath(root) for root in allow_roots]
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise InvalidRequest(
            f"work_dir {work_dir!r} is outside the allowed roots: {', '.join(roots)} "
            "(start the server with --allow-root to add one)",
            field="work_dir",
        )
    if not os.path.isdir(real):
        raise InvalidRequest(f"work_dir {work_dir!r} is not an existing folder", field="work_dir")
    return real


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


class WebhookAttempt(msgspec.Struct):
    attempt: int  # from 1
    at: str
    status_code: int | None  # the receiver's answer (None: no answer)
    error: str | None = None  # why it failed, when it did


class WebhookDelivery(msgspec.Struct):
    """One event to post (a run's end), with every attempt so far. `id` is the `webhook-id`
    each attempt carries."""

    id: str
    session_id: str
    run_id: str
    type: str  # run.<status>
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttempt]
    created_at: str
    next_attempt_at: str | None  # while pending


class Outgoing(msgspec.Struct):
    """A delivery the sender is to try: what it posts, and to whom."""

    id: str
    url: str
    secret: str  # sealed
    payload: bytes
    attempts: int  # made so far
    created_unix: float
