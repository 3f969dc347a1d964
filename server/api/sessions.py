"""/sessions: create (or resume by name), list, read, update, archive and delete sessions;
read their history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import webhooks
from server.api.request import (
    decode_body,
    json_response,
    page_params,
    parse_count,
    query_choice,
    query_int,
    runner,
    session_of,
    store,
    tenant_of,
)
from server.errors import Conflict
from server.ids import now
from server.models import (
    Page,
    SessionRecord,
    check_session_name,
    new_session_record,
    work_dir_within,
)
from server.store import DEFAULT_AGENT_ID, SessionFilter
from server.store.pages import MAX_LIMIT

SessionName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
Title = Annotated[str, Meta(max_length=1000)]
Tag = Annotated[str, Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Meta(max_length=100)]
Ttl = Annotated[int, Meta(ge=1, le=10 * 365 * 86400)]
STATUSES = ("idle", "running", "requires_action", "failed", "archived")


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    agent_id: str | None = None
    work_dir: str | None = None
    title: Title | None = None
    metadata: dict[str, Any] = {}
    name: SessionName | None = None
    tags: Tags = []
    ttl_seconds: Ttl | None = None
    if_exists: Literal["error", "resume"] = "error"
    webhook_url: str | None = None


class UpdateSession(msgspec.Struct, forbid_unknown_fields=True):
    agent_id: str | UnsetType = UNSET
    work_dir: str | UnsetType | None = UNSET
    title: Title | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    name: SessionName | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    ttl_seconds: Ttl | UnsetType | None = UNSET
    webhook_url: str | UnsetType | None = UNSET


class SessionView(SessionRecord):
    """A session as the request that set a new `webhook_url` sees it: with the endpoint's
    secret, shown this once."""

    webhook_secret: str | None = None


def with_secret(record: SessionRecord, secret: str | None) -> SessionRecord:
    if secret is None:
        return record
    return SessionView(**msgspec.structs.asdict(record), webhook_secret=secret)


create_decoder = msgspec.json.Decoder(CreateSession)
update_decoder = msgspec.json.Decoder(UpdateSession)


def check_work_dir(request: Request, work_dir: str | None) -> str | None:
    return work_dir_within(work_dir, request.app.state.settings.allow_roots)


def check_name(name: str | None) -> str | None:
    return check_session_name(name)


async def create_session(request: Request) -> Response:
    body = await decode_body(request, create_decoder)
    sessions = store(request).sessions
    tenant = tenant_of(request)
    resume = body.name is not None and body.if_exists == "resume"
    if resume and (existing := await sessions.find_by_name(body.name or "", tenant)) is not None:
        return json_response(existing, 200)
    agent_id = body.agent_id or DEFAULT_AGENT_ID
    await store(request).agents.get(agent_id, tenant)
    record = new_session_record(
        agent_id,
        check_work_dir(request, body.work_dir),
        name=check_name(body.name),
        title=body.title,
        tags=body.tags,
        metadata=body.metadata,
        ttl_seconds=body.ttl_seconds,
    )
    hook = await webhooks.endpoint(request, body.webhook_url, None)
    record.webhook_url = hook.url
    try:
        created = await sessions.create(record, tenant, hook.sealed)
    except Conflict:
        # create-or-resume raced another request creating the same name: resume theirs
        if resume and (existing := await sessions.find_by_name(body.name or "", tenant)):
            return json_response(existing, 200)
        raise
    runner(request).session_created(tenant, created)
    return json_response(with_secret(created, hook.shown), 201)


async def list_sessions(request: Request) -> Response:
    limit, cursor = page_params(request)
    where = SessionFilter(
        status=query_choice(request, "status", STATUSES, None),
        tags=request.query_params.getlist("tag"),
        agent_id=request.query_params.get("agent_id"),
        work_dir=request.query_params.get("work_dir"),
        name=request.query_params.get("name"),
        order=query_choice(request, "order", ("updated_at", "created_at"), "updated_at"),
    )
    page: Page[SessionRecord] = await store(request).sessions.page(
        tenant_of(request), where, limit, cursor
    )
    return json_response(page)


async def get_session(request: Request) -> Response:
    return json_response(await session_of(request))


async def update_session(request: Request) -> Response:
    body = await decode_body(request, update_decoder)
    st = store(request)
    record = await session_of(request)
    changes = {f: v for f in body.__struct_fields__ if (v := getattr(body, f)) is not UNSET}
    if "agent_id" in changes:
        await st.agents.get(changes["agent_id"], tenant_of(request))
    if "work_dir" in changes:
        changes["work_dir"] = check_work_dir(request, changes["work_dir"])
    if "name" in changes and changes["name"] != record.name:
        check_name(changes["name"])
    shown = None
    if "webhook_url" in changes:
        hook = await webhooks.endpoint(request, changes["webhook_url"], record.webhook_url)
        if hook.url != record.webhook_url:
            changes["webhook_secret"] = hook.sealed
        shown = hook.shown
    if not changes:
        return json_response(record)
    updated = await st.sessions.update(record.id, changes, now())
    return json_response(with_secret(updated, shown))


async def delete_session(request: Request) -> Response:
    st = store(request)
    record = await session_of(request)
    await runner(request).stop_session(record.id)
    await st.sessions.delete(record.id)
    return Response(status_code=204)


async def archive_session(request: Request) -> Response:
    sessions = store(request).sessions
    record = await session_of(request)
    if record.archived_at is None:
        stamp = now()
        await sessions.set_archived(record.id, stamp, stamp)
    return json_response(await sessions.get(record.id, None))


async def unarchive_session(request: Request) -> Response:
    sessions = store(request).sessions
    record = await session_of(request)
    if record.archived_at is not None:
        await sessions.set_archived(record.id, None, now())
    return json_response(await sessions.get(record.id, None))


async def list_messages(request: Request) -> Response:
    st = store(request)
    record = await session_of(request)
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    cursor = request.query_params.get("cursor")
    after = query_int(request, "after", 0, 0, 2**62)
    if cursor:
        after = parse_count(cursor, "cursor")
    messages = await st.messages.page(record.id, after, limit + 1)
    more = len(messages) > limit
    data = messages[:limit]
    return json_response(Page(data, str(data[-1].seq) if more and data else None))


async def compact_session(request: Request) -> Response:
    record = await session_of(request)
    return json_response(await runner(request).compact(record))


routes = [
    Route("/sessions/{session_id}/compact", compact_session, methods=["POST"]),
    Route("/sessions", create_session, methods=["POST"]),
    Route("/sessions", list_sessions, methods=["GET"]),
    Route("/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/sessions/{session_id}", update_session, methods=["PUT", "PATCH"]),
    Route("/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/sessions/{session_id}/messages", list_messages, methods=["GET"]),
    Route("/sessions/{session_id}/archive", archive_session, methods=["POST"]),
    Route("/sessions/{session_id}/unarchive", unarchive_session, methods=["POST"]),
]
