"""OpenAI's Responses API over sessiond's runs: POST /v1/responses, GET /v1/responses/{id}
(with `?stream=true&starting_after=N`), POST /v1/responses/{id}/cancel.

A response is a run, a conversation a session; `model` names an agent. Where the run goes:
    neither conversation nor previous_response_id   a new session of that agent
    conversation (a session's id or name)           that session
    previous_response_id, the session's latest run  that session
    previous_response_id, an older run              a fork of its session up to that run's end
    store: false                                    as above, with nothing stored (a run with
                                                    no persistence: it cannot be retrieved)
`function_call_output` items answer the response that paused for them (by
previous_response_id, or the conversation's paused run): the run goes on, and the new
response is the part of the run after the pause (response_stream.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import events
from server.api import sse
from server.api.forks import ForkBody, fork
from server.api.limits import key_of, limits
from server.api.messages import RUN_ID_HEADER, refuse_unusable
from server.api.request import (
    decode_body,
    json_response,
    parse_count,
    query_choice,
    runner,
    session_of,
    store,
    tenant_of,
)
from server.api.response_input import ResponseBody, Turn, body_decoder, check_metadata, turn_of
from server.api.response_stream import (
    Conversation,
    FunctionTool,
    Head,
    Translator,
    parse_response_id,
    response_id,
)
from server.api.sessions import check_work_dir
from server.errors import Conflict, InvalidRequest, NotFound
from server.events import Done, EventRow
from server.ids import seconds_of
from server.models import FINISHED_STATUSES, Agent, Message, SessionRecord, Usage
from server.models import new_session_record as new_record
from server.runs.active import RunRequest
from server.runs.agentspec import offered
from server.runs.handle import RunHandle
from server.store import Store, StoredRun

PING = b": ping\n\n"  # a comment: the SDKs' parsers skip it
REPLAY_PAGE = 2000


class Found(msgspec.Struct):
    """A response named by its id: its run, the run's session, where the response begins."""

    stored: StoredRun
    session: SessionRecord
    after: int


class Started(msgspec.Struct):
    handle: RunHandle
    head: Head
    after: int = 0
    base: Usage | None = None  # the run's usage when this part began


# -- finding ------------------------------------------------------------------------------
async def find(request: Request, raw: str) -> Found:
    """The response of that id among the tenant's: another tenant's is not found, with the
    same answer as an id that never existed."""
    missing = NotFound(f"response {raw[:80]!r} not found")
    parsed = parse_response_id(raw)
    if parsed is None:
        raise missing
    run_id, after = parsed
    st = store(request)
    try:
        stored = await st.runs.get(run_id)
        session = await st.sessions.get(stored.run.session_id, tenant_of(request))
    except NotFound:
        raise missing from None
    if after and await _pause_usage(st, run_id, after) is None:
        raise missing
    return Found(stored, session, after)


async def _pause_usage(st: Store, run_id: str, after: int) -> Usage | None:
    """The run's usage at the pause whose `done` is event `after` (None: not such a one)."""
    rows = await st.events.read(run_id, after - 1, 1)
    if not rows or rows[0][1] != after or rows[0][2] != "done":
        return None
    done = events.decode(rows[0][3])
    if not isinstance(done, Done) or done.status != "requires_action":
        return None
    return done.usage


async def agent_named(request: Request, model: str) -> Agent:
    st, tenant = store(request), tenant_of(request)
    try:
        return await st.agents.get(model, tenant)
    except NotFound:
        found = await st.agents.find_by_name(model, tenant)
        if found is None:
            raise NotFound(f"model {model[:80]!r} names no agent, by id or name") from None
        return found


async def _agent_name(st: Store, agent_id: str) -> str:
    try:
        return (await st.agents.get(agent_id, None)).name
    except NotFound:  # deleted since
        return agent_id


def head_of(
    run_id: str, after: int, model: str, session_id: str | None, request: RunRequest
) -> Head:
    tools = [FunctionTool(t.name, t.input_schema, t.description or None) for t in request.tools]
    return Head(
        id=response_id(run_id, after),
        created_at=seconds_of(run_id),
        model=model,
        conversation=Conversation(session_id) if session_id else None,
        instructions=request.system,
        metadata=request.metadata,
        tools=tools,
    )


async def stored_head(st: Store, found: Found) -> Head:
    run = found.stored.run
    options = {**found.stored.options, "content": []}
    try:
        asked = msgspec.convert(options, RunRequest)
    except msgspec.ValidationError:
        asked = RunRequest([])
    return head_of(run.id, found.after, await _agent_name(st, run.agent_id), run.session_id, asked)


# -- starting -----------------------------------------------------------------------------
async def _answer(request: Request, body: ResponseBody, turn: Turn) -> Started:
    """function_call_output items: the paused run they answer goes on."""
    if not body.store:
        raise InvalidRequest("function_call_output needs a stored response", field="store")
    st = store(request)
    if body.previous_response_id is not None:
        found = await find(request, body.previous_response_id)
        stored, session = found.stored, found.session
    elif body.conversation is not None:
        session = await session_of(request, _conversation_key(body))
        paused = await st.runs.paused(session.id)
        if paused is None:
            raise Conflict(f"conversation {session.id} has no response waiting for tool output")
        stored = paused
    else:
        raise InvalidRequest(
            "function_call_output answers a response: send previous_response_id (or the "
            "conversation)",
            field="previous_response_id",
        )
    base = stored.run.usage
    handle = await runner(request).resume(
        tenant_of(request), session.id, stored.run.id, turn.results
    )
    after = handle.resumed_after
    found = Found(stored, session, after)
    return Started(handle, await stored_head(st, found), after, base)


def _conversation_key(body: ResponseBody) -> str:
    conversation = body.conversation
    assert conversation is not None
    return conversation if isinstance(conversation, str) else conversation.id


async def _target(
    request: Request, body: ResponseBody, agent: Agent
) -> tuple[SessionRecord | None, list[Message] | None]:
    """The session the turn goes to (None: a new one), and for a run that writes nothing
    the history it starts from (None: the session's whole history)."""
    st = store(request)
    if body.work_dir is not None and (body.conversation or body.previous_response_id):
        raise InvalidRequest("work_dir is for a new conversation only", field="work_dir")
    if body.conversation is not None:
        return await session_of(request, _conversation_key(body)), None
    if body.previous_response_id is None:
        return None, []
    found = await find(request, body.previous_response_id)
    source, run_id = found.session, found.stored.run.id
    latest = (await st.runs.page(source.id, 1, None)).data
    if latest and latest[0].id == run_id:
        return source, None
    messages = await st.messages.of_run(run_id)
    if not messages:
        raise Conflict(f"response {body.previous_response_id} stored nothing to go on from")
    if not body.store:
        history = await st.messages.history(source.id)
        return source, [m for m in history if m.seq <= messages[-1].seq]
    forked = await fork(st, tenant_of(request), source, ForkBody(at_message_id=messages[-1].id))
    return forked, None


async def _start(request: Request, body: ResponseBody, turn: Turn) -> Started:
    st, tenant = store(request), tenant_of(request)
    agent = await agent_named(request, body.model)
    session, history = await _target(request, body, agent)
    metadata = check_metadata(body.metadata)
    override = agent.id if session is not None and session.agent_id != agent.id else None
    run = RunRequest(
        list(turn.text),
        override,
        tools=turn.tools,
        system=turn.instructions,
        metadata=metadata,
    )
    if not body.store:
        work_dir = session.work_dir if session else check_work_dir(request, body.work_dir)
        if history is None:
            assert session is not None
            history = await st.messages.history(session.id)
        usable = offered(agent, runner(request).settings.tools)
        handle = await runner(request).run_ephemeral(usable, work_dir, history, run)
        return Started(handle, head_of(handle.id, 0, agent.name, None, run))
    if session is None:
        record = new_record(agent.id, check_work_dir(request, body.work_dir))
        session = await st.sessions.create(record, tenant)
        runner(request).session_created(tenant, session)
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be at most 255 characters")
    handle = await runner(request).submit(tenant, session.id, run, key)
    return Started(handle, head_of(handle.id, 0, agent.name, session.id, run))


# -- the routes ---------------------------------------------------------------------------
async def create_response(request: Request) -> Response:
    body = await decode_body(request, body_decoder)
    turn = turn_of(body)
    if body.conversation is not None and body.previous_response_id is not None:
        raise InvalidRequest(
            "send either conversation or previous_response_id, not both", field="conversation"
        )
    if body.stream:
        limits(request).check_stream(key_of(request))
    if not turn.results:  # counted before a fork or a session is made for it
        limits(request).start_run(key_of(request))
    started = await (_answer if turn.results else _start)(request, body, turn)
    handle = started.handle
    await refuse_unusable(handle)
    headers = {RUN_ID_HEADER: handle.id}
    translator = Translator(started.head, started.after, started.base)
    if body.stream:
        ping_s = request.app.state.settings.ping_s
        batches = handle.follow(started.after, ping_s)
        response = stream_response(request, batches, translator, ends_by_itself=True)
        response.headers.update(headers)
        return response
    if body.background:
        return json_response(translator.response("queued"), 200, headers)
    ping_s = request.app.state.settings.ping_s
    async for rows in handle.follow(started.after, ping_s):
        translator.feed(rows)
        if translator.finished:
            break
    return json_response(translator.response(), 200, headers)


def stream_response(
    request: Request,
    batches: AsyncIterator[list[EventRow]],
    translator: Translator,
    ends_by_itself: bool = False,
) -> Response:
    """The response's events as a stream. A run's events go on after a response's end when
    the response is the part of a run before its pause: `ends_by_itself` says that these
    batches stop at the response's end anyway (a new run's, a resumed run's), and spares
    every batch a generator in between (bench responses)."""
    opening = _Opening(translator, request.app.state.settings.sse_retry_ms)
    if not ends_by_itself:
        batches = _until_done(batches, translator)
    framed = sse.framed(request, batches, opening.frames)
    framed.opening = opening.start()
    framed.ping = PING
    return sse.stream(request, framed)


class _Opening:
    """The stream's frames, `retry:` put as the first line of the first event's block: the
    openai SDK takes a block of its own for an event without data, and fails on it."""

    def __init__(self, translator: Translator, retry_ms: int) -> None:
        self.translator = translator
        self.lead = b"retry: %d\n" % retry_ms

    def _led(self, data: bytes) -> bytes:
        if data and self.lead:
            data, self.lead = self.lead + data, b""
        return data

    def start(self) -> bytes:
        return self._led(self.translator.start())

    def frames(self, rows: list[EventRow]) -> bytes:
        data = self.translator.frames(rows)
        return self._led(data) if self.lead else data


async def _until_done(
    batches: AsyncIterator[list[EventRow]], translator: Translator
) -> AsyncIterator[list[EventRow]]:
    """A response ends with its run's (or its part's) `done`; a resumed run's next part is
    another response."""
    try:
        async for rows in batches:
            yield rows
            if translator.finished:
                return
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


def _starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after") or request.headers.get("last-event-id")
    return -1 if raw is None or raw == "" else parse_count(raw, "starting_after")


async def retrieve_response(request: Request) -> Response:
    found = await find(request, request.path_params["response_id"])
    st = store(request)
    head = await stored_head(st, found)
    run = found.stored.run
    base = await _pause_usage(st, run.id, found.after) if found.after else None
    stream = query_choice(request, "stream", ("true", "false"), "false") == "true"
    if stream:
        translator = Translator(head, found.after, base, _starting_after(request))
        batches = runner(request).follow(run.id, found.after, request.app.state.settings.ping_s)
        return stream_response(request, batches, translator)
    translator = Translator(head, found.after, base)
    await replay(st, translator, run.id, found.after)
    if translator.finished:
        return json_response(translator.response())
    status = "queued" if run.status == "queued" else "in_progress"
    return json_response(translator.response(status))


async def replay(st: Store, translator: Translator, run_id: str, after: int) -> None:
    """The response's events as stored so far (a finished run's are all stored)."""
    while not translator.finished:
        rows = await st.events.read(run_id, after, REPLAY_PAGE)
        translator.feed(rows)
        if len(rows) < REPLAY_PAGE:
            return
        after = rows[-1][1]


async def cancel_response(request: Request) -> Response:
    found = await find(request, request.path_params["response_id"])
    if found.stored.run.status not in FINISHED_STATUSES:
        await runner(request).cancel_run(found.stored.run)
    return await retrieve_response(request)


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
]
