"""POST /run: one call for scripts that do not want to manage sessions.

Which session the prompt goes to:
    nothing                      a new session (with agent_id and work_dir when given)
    session_id + resume          that session (work_dir, if given, must be the session's)
    continue                     the most recently active unarchived session (of work_dir)
    session_id + fork_session    a new session branched from all of that one's history
    no_persistence               any of the above, with nothing written to the database: the
                                 answer's session_id then names a session that is not stored

The answer is /message's (or, with `stream`, /message/stream's events); the session's id is
in its `session_id` and, for streams too, in the `Session-Id` header. `agent_id` picks the
agent of a new session, and overrides the agent for this one run otherwise.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import sse
from server.api.forks import ForkBody, fork
from server.api.limits import key_of, limits
from server.api.messages import MessageBody, finished_result, refuse_unusable, to_request
from server.api.request import decode_body, json_response, runner, session_of, store, tenant_of
from server.api.sessions import check_work_dir
from server.errors import InvalidRequest, NotFound
from server.models import ContentBlock, SessionRecord, new_session_record
from server.runs.active import RunRequest
from server.runs.agentspec import offered
from server.runs.handle import RunHandle
from server.store import DEFAULT_AGENT_ID, SessionFilter, Store


class RunBody(msgspec.Struct, forbid_unknown_fields=True):
    prompt: str | list[ContentBlock]
    agent_id: str | None = None
    work_dir: str | None = None
    session_id: str | None = None
    resume: bool = False
    continue_: bool = msgspec.field(default=False, name="continue")
    fork_session: bool = False
    no_persistence: bool = False
    stream: bool = False


body_decoder = msgspec.json.Decoder(RunBody)


def mode_of(body: RunBody) -> str:
    """new | resume | continue | fork; a contradictory combination is refused."""
    if body.continue_:
        if body.session_id is not None or body.resume or body.fork_session:
            raise InvalidRequest(
                "continue picks the session itself: send it without session_id, resume and "
                "fork_session",
                field="continue",
            )
        return "continue"
    if body.session_id is None:
        if body.resume or body.fork_session:
            raise InvalidRequest("resume and fork_session need a session_id", field="session_id")
        return "new"
    if body.resume == body.fork_session:
        raise InvalidRequest(
            "with a session_id, set exactly one of resume or fork_session", field="session_id"
        )
    return "resume" if body.resume else "fork"


async def latest(st: Store, tenant: str, work_dir: str | None) -> SessionRecord:
    page = await st.sessions.page(tenant, SessionFilter(work_dir=work_dir), 1, None)
    if not page.data:
        where = f" in work_dir {work_dir}" if work_dir else ""
        raise NotFound(f"there is no session to continue{where}")
    return page.data[0]


async def source_of(request: Request, body: RunBody, mode: str) -> SessionRecord | None:
    """The session whose history the run continues (None for a new session)."""
    st = store(request)
    if mode == "continue":
        return await latest(st, tenant_of(request), check_work_dir(request, body.work_dir))
    if body.session_id is None:
        return None
    record = await session_of(request, body.session_id)
    moved = body.work_dir is not None and check_work_dir(request, body.work_dir) != record.work_dir
    if mode == "resume" and moved:
        raise InvalidRequest(
            f"work_dir differs from session {record.id}'s; leave it out to resume",
            field="work_dir",
        )
    return record


async def persisted(request: Request, body: RunBody, run: RunRequest) -> RunHandle:
    st = store(request)
    tenant = tenant_of(request)
    mode = mode_of(body)
    source = await source_of(request, body, mode)
    if source is None:
        await st.agents.get(body.agent_id or DEFAULT_AGENT_ID, tenant)
        work_dir = check_work_dir(request, body.work_dir)
        source = await st.sessions.create(
            new_session_record(body.agent_id or DEFAULT_AGENT_ID, work_dir), tenant
        )
        run = msgspec.structs.replace(run, agent_id=None)
    elif mode == "fork":
        work_dir = check_work_dir(request, body.work_dir)
        source = await fork(st, tenant, source, ForkBody(), work_dir)
    return await runner(request).submit(tenant, source.id, run)  # no idempotency key: new run


async def ephemeral(request: Request, body: RunBody, run: RunRequest) -> RunHandle:
    st = store(request)
    tenant = tenant_of(request)
    mode = mode_of(body)
    source = await source_of(request, body, mode)
    tools = runner(request).settings.tools
    if source is None:
        agent = offered(await st.agents.get(body.agent_id or DEFAULT_AGENT_ID, tenant), tools)
        return await runner(request).run_ephemeral(
            agent, check_work_dir(request, body.work_dir), [], run
        )
    agent = offered(await st.agents.get(body.agent_id or source.agent_id, tenant), tools)
    work_dir = source.work_dir
    if mode == "fork" and body.work_dir is not None:
        work_dir = check_work_dir(request, body.work_dir)
    history = await st.messages.history(source.id)
    return await runner(request).run_ephemeral(agent, work_dir, history, run)


async def run_once(request: Request) -> Response:
    body = await decode_body(request, body_decoder)
    if body.stream:
        limits(request).check_stream(key_of(request))
    limits(request).start_run(key_of(request))
    run = to_request(MessageBody(body.prompt, body.agent_id))
    start = ephemeral if body.no_persistence else persisted
    active = await start(request, body, run)
    headers = {"Session-Id": active.session_id}
    if not body.stream:
        return json_response(await finished_result(active), 200, headers)
    await refuse_unusable(active)
    batches = active.follow(0, request.app.state.settings.ping_s)

    async def disconnected() -> None:
        if body.no_persistence:  # nobody could read it later
            await active.cancel()

    response = sse.stream(request, sse.framed(request, batches, sse.run_frames), disconnected)
    response.headers.update(headers)
    return response


routes = [
    Route("/run", run_once, methods=["POST"]),
]
