"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API over sessiond's
runs, so that code on the official `anthropic` SDK works against sessiond unchanged.

`model` names an agent (by id or name). A call is one run: a session named by the header
`sessiond-session-id` (made with that name if there is none), else a new session each call;
every answer names the session in the same header. `messages` holds the new user turn only,
or the whole conversation: then whatever comes before the last message must be the stored
history (compared by text and tool-call ids), else 409; a new session stores it as its
history first. A turn of `tool_result` blocks answers the run waiting for them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import sse
from server.api.anthropic_wire import Translator, reply_of
from server.api.limits import key_of, limits
from server.api.messages import RUN_ID_HEADER, finished_result, refuse_unusable
from server.api.request import decode_body, json_response, runner, store, tenant_of
from server.api.sessions import check_name
from server.errors import ApiError, Conflict, InvalidRequest, NotFound
from server.ids import is_ulid, now
from server.models import (
    Agent,
    ClientTool,
    ContentBlock,
    Message,
    Role,
    SessionRecord,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Turn,
    new_messages,
    new_session_record,
)
from server.runs.active import RunRequest
from server.runs.handle import RunHandle

SESSION_HEADER = "sessiond-session-id"

# -- the request, as Anthropic defines it (fields it has that sessiond does not use are
# accepted and ignored, as the SDK may send them) ---------------------------------------------


class InText(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class InToolUse(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class InServerToolUse(msgspec.Struct, tag="server_tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class InToolResult(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[InText] = ""
    is_error: bool = False


InBlock = InText | InToolUse | InServerToolUse | InToolResult


class InMessage(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[InBlock]


class InTool(msgspec.Struct):
    name: str
    input_schema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})
    description: str = ""
    type: str | None = None


class MessagesBody(msgspec.Struct):
    model: str
    messages: list[InMessage]
    max_tokens: int | None = None
    system: str | list[InText] | None = None
    stream: bool = False
    tools: list[InTool] = []
    metadata: dict[str, Any] = {}


class CountBody(msgspec.Struct):
    model: str
    messages: list[InMessage]
    system: str | list[InText] | None = None
    tools: list[InTool] = []


class TokenCount(msgspec.Struct):
    input_tokens: int
    estimated: bool  # true: a count of the characters sent, not a tokenizer's


body_decoder = msgspec.json.Decoder(MessagesBody)
count_decoder = msgspec.json.Decoder(CountBody)


# -- from Anthropic's blocks to sessiond's ----------------------------------------------------


def blocks_of(message: InMessage) -> list[InBlock]:
    return [InText(message.content)] if isinstance(message.content, str) else message.content


def result_of(block: InToolResult) -> ToolResultBlock:
    content = block.content
    text = content if isinstance(content, str) else "".join(b.text for b in content)
    return ToolResultBlock(block.tool_use_id, text, block.is_error)


def stored_form(messages: list[InMessage]) -> list[tuple[Role, list[ContentBlock]]]:
    """Anthropic messages as sessiond stores them: the results of server calls in an
    assistant message become the user message after the calls, as a provider is sent them."""
    entries: list[tuple[Role, list[ContentBlock]]] = []

    def add(role: Role, block: ContentBlock) -> None:
        if entries and entries[-1][0] == role:
            entries[-1][1].append(block)
        else:
            entries.append((role, [block]))

    for message in messages:
        for block in blocks_of(message):
            match block:
                case InText(text=text):
                    add(message.role, TextBlock(text))
                case InToolUse() | InServerToolUse():
                    add("assistant", ToolUseBlock(block.id, block.name, block.input))
                case InToolResult():
                    add("user", result_of(block))
    return entries


Mark = tuple[str, str, str]  # (role, kind, text or call id)


def marks_of(entries: list[tuple[Role, list[ContentBlock]]]) -> list[Mark]:
    """What two histories must share to be the same conversation: each text and tool call
    in order, by role (results are left out: an answer shows them where it likes)."""
    marks: list[Mark] = []
    for role, content in entries:
        for block in content:
            if isinstance(block, TextBlock):
                marks.append((role, "text", block.text))
            elif isinstance(block, ToolUseBlock):
                marks.append((role, "call", block.id))
    return marks


def system_of(system: str | list[InText] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return "\n\n".join(b.text for b in system) or None


def client_tools_of(tools: list[InTool]) -> list[ClientTool]:
    found = []
    for tool in tools:
        if tool.type not in (None, "custom"):
            raise InvalidRequest(
                f"tool {tool.name!r} is of type {tool.type!r}: sessiond takes only client "
                "tools here (its own tools are the agent's)",
                field="tools",
            )
        found.append(ClientTool(tool.name, tool.input_schema, tool.description))
    return found


# -- the session and the agent ----------------------------------------------------------------


async def agent_of(request: Request, model: str) -> Agent:
    tenant = tenant_of(request)
    try:
        return await store(request).agents.get(model, tenant)
    except NotFound:
        found = await store(request).agents.find_by_name(model, tenant)
        if found is None:
            raise NotFound(
                f"model {model!r} names no agent: give an agent's id or name, or default"
            ) from None
        return found


async def existing_session(request: Request) -> SessionRecord | None:
    """The session the header names, None if it names none yet (then one is made with that
    name) or there is no header."""
    key = request.headers.get(SESSION_HEADER)
    if not key:
        return None
    try:
        return await store(request).sessions.get(key, tenant_of(request))
    except NotFound:
        if is_ulid(key):
            raise
        check_name(key)
        return None


async def new_session(
    request: Request, agent: Agent, history: list[tuple[Role, list[ContentBlock]]]
) -> SessionRecord:
    name = request.headers.get(SESSION_HEADER) or None
    record = new_session_record(agent.id, None, name=name)
    if not history:
        return await store(request).sessions.create(record, tenant_of(request))
    record = msgspec.structs.replace(record, message_count=len(history))
    messages = new_messages(record.id, 1, history, None, now())
    try:
        await store(request).transfer.restore(tenant_of(request), [(record, messages, [])])
    except Conflict as exc:
        raise Conflict(f"a session named {name!r} was made meanwhile; send again") from exc
    return record


def check_history(record: SessionRecord, stored: list[Message], earlier: list[Mark]) -> None:
    said = [(m.role, m.content) for m in stored if m.role != "compaction"]  # not the client's
    if marks_of(said) != earlier:
        raise Conflict(
            f"the messages before the last differ from session {record.id}'s history: send "
            "only the new turn, or the whole conversation as stored"
        )


# -- the run ----------------------------------------------------------------------------------


class NewTurn(msgspec.Struct):
    """The new turn, checked before any session is made for it."""

    content: list[ContentBlock]
    results: list[ToolResultBlock]
    tools: list[ClientTool]


def turn_of(body: MessagesBody) -> NewTurn:
    if not body.messages or body.messages[-1].role != "user":
        raise InvalidRequest("messages must end with a user message", field="messages")
    blocks = blocks_of(body.messages[-1])
    content = [b for _, part in stored_form([InMessage("user", blocks)]) for b in part]
    results = [b for b in content if isinstance(b, ToolResultBlock)]
    if not results and not any(isinstance(b, TextBlock) and b.text.strip() for b in content):
        raise InvalidRequest("the last message must hold some text", field="messages")
    return NewTurn(content, results, client_tools_of(body.tools))


async def start(request: Request, body: MessagesBody, agent: Agent) -> tuple[RunHandle, str]:
    """Start (or resume) the run; returns it and its session's id."""
    turn = turn_of(body)
    earlier = body.messages[:-1]
    history = stored_form(earlier)
    limits(request).start_run(key_of(request))
    record = await existing_session(request)
    made = record is None
    if record is None:
        record = await new_session(request, agent, history)
    try:
        if earlier and not made:
            stored = await store(request).messages.history(record.id)
            check_history(record, stored, marks_of(history))
        return await run_turn(request, body, agent, record, turn, made), record.id
    except ApiError as exc:
        exc.headers[SESSION_HEADER] = record.id
        raise


async def run_turn(
    request: Request,
    body: MessagesBody,
    agent: Agent,
    record: SessionRecord,
    turn: NewTurn,
    made: bool,
) -> RunHandle:
    """A new session's turn of tool results goes with the history stored before it; an
    existing session's answers its paused run."""
    tenant = tenant_of(request)
    if turn.results and not made:
        if len(turn.results) != len(turn.content):
            raise InvalidRequest(
                "a turn that answers tool calls holds only tool_result blocks", field="messages"
            )
        paused = await store(request).runs.paused(record.id)
        if paused is None:
            raise Conflict(f"no run of session {record.id} waits for tool results")
        return await runner(request).resume(tenant, record.id, paused.run.id, turn.results)
    run = RunRequest(
        turn.content,
        agent_id=agent.id,
        tools=turn.tools,
        system=system_of(body.system),
        max_tokens=body.max_tokens,
        metadata=body.metadata,
    )
    return await runner(request).submit(tenant, record.id, run)


def client_names(agent: Agent, body: MessagesBody) -> set[str]:
    names = {t.name for t in agent.tools if isinstance(t, ClientTool)}
    return names | {t.name for t in body.tools}


async def create_message(request: Request) -> Response:
    body = await decode_body(request, body_decoder)
    if body.max_tokens is not None and body.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", field="max_tokens")
    agent = await agent_of(request, body.model)
    if body.stream:
        limits(request).check_stream(key_of(request))
    started, session_id = await start(request, body, agent)
    headers = {SESSION_HEADER: session_id, RUN_ID_HEADER: started.id}
    if not body.stream:
        try:
            await finished_result(started)
        except ApiError as exc:
            exc.headers.update(headers)
            raise
        outcome = await started.outcome()
        reply = reply_of(outcome.run, outcome.messages, outcome.held, body.model)
        return json_response(reply, 200, headers)
    await refuse_unusable(started)
    translate = Translator(started.id, body.model, client_names(agent, body))
    batches = started.follow(started.resumed_after, request.app.state.settings.ping_s)
    response = sse.stream(request, sse.framed(request, batches, translate))
    response.headers.update(headers)
    return response


async def count_tokens(request: Request) -> Response:
    """The agent's provider's count where it has one; else an estimate, a token for every
    four bytes of the JSON of what the run would send (the stored history included)."""
    body = await decode_body(request, count_decoder)
    agent = await agent_of(request, body.model)
    system = system_of(body.system)
    record = await existing_session(request)
    stored = await store(request).messages.history(record.id) if record is not None else []
    turns = runner(request).model_view(stored)
    turns += [Turn(role, content) for role, content in stored_form(body.messages)]
    client = client_tools_of(body.tools)
    counted = await runner(request).count_tokens(agent, system, turns, client)
    if counted is not None:
        return json_response(TokenCount(counted, estimated=False))
    size = len(msgspec.json.encode([agent.system, system, turns, client]))
    return json_response(TokenCount(math.ceil(size / 4), estimated=True))


routes = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
