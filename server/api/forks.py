"""POST /sessions/{id}/fork: a new session holding a copy of another's history up to a message.

The copy is made in one transaction from the stored messages, and the runner stores each
step of a run whole, so forking a running session copies exactly its completed steps. The
fork keeps the source's agent, work_dir, title, tags, metadata and TTL (not its name, which
is unique); its runs, turns and usage start at zero, as they count its own runs.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.request import decode_body, json_response, session_of, store, tenant_of
from server.api.sessions import SessionName, Title, check_name
from server.models import SessionRecord, new_session_record
from server.store import Store


class ForkBody(msgspec.Struct, forbid_unknown_fields=True):
    at_message_id: str | None = None
    title: Title | None = None
    name: SessionName | None = None


fork_decoder = msgspec.json.Decoder(ForkBody)


async def fork(
    st: Store, tenant: str, source: SessionRecord, body: ForkBody, work_dir: str | None = None
) -> SessionRecord:
    """Fork `source` (into `work_dir` when given, else the source's own); the fork is the
    tenant's, as the source is."""
    record = new_session_record(
        source.agent_id,
        work_dir or source.work_dir,
        name=check_name(body.name),
        title=body.title if body.title is not None else source.title,
        tags=list(source.tags),
        metadata=dict(source.metadata),
        ttl_seconds=source.ttl_seconds,
        parent_id=source.id,
    )
    await st.sessions.fork(source.id, body.at_message_id, record, tenant)
    return await st.sessions.get(record.id, None)


async def fork_session(request: Request) -> Response:
    source = await session_of(request)
    body = await _body(request)
    return json_response(await fork(store(request), tenant_of(request), source, body), 201)


async def _body(request: Request) -> ForkBody:
    # every field is optional: no body at all forks the whole history
    length = request.headers.get("content-length")
    if length == "0" or (length is None and "transfer-encoding" not in request.headers):
        return ForkBody()
    return await decode_body(request, fork_decoder)


routes = [
    Route("/sessions/{session_id}/fork", fork_session, methods=["POST"]),
]
