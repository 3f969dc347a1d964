"""Export and import: GET /sessions/{id}/export (json, jsonl, markdown), POST /sessions/export
(a zip bundle of many), POST /sessions/import (a json export or a bundle).

`?with_agents=true` on an export adds the sessions' agents (the json document's `agents`,
the bundle's agents.json).

Import decisions: new ids unless `keep_ids` (a clash is 409 and imports nothing); `?agent_id=`
gives every session that agent; else a session keeps its agent if the server has one with
that id, or is given the server's agent of the same name as its exported agent, or that
agent is created (when the import carries it); else it is refused (400). Each work_dir must
pass the same check as on create unless `?work_dir=` replaces them all; the history must
pair every tool call with its result (see restore.py, which answers calls the history went
on past). The body has a limit of its own (max_import_bytes), and a bundle may unpack to at
most four times that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.agents import CreateAgent
from server.api.request import (
    decode_body,
    field_of,
    json_response,
    query_choice,
    read_body,
    runner,
    store,
    tenant_of,
)
from server.api.sessions import Tags, UpdateSession, check_name, check_work_dir
from server.errors import InvalidRequest, NotFound
from server.ids import new_ulid, now
from server.models import Agent, Message, Run, SessionRecord
from server.runs import agentspec
from server.store import SessionFilter, Store
from server.transfer import bundle, restore, transcript
from server.transfer.transcript import SessionExport

# What POST /sessions/import takes (server/api/guard.py refuses other bodies): a json export, a zip
# bundle, or bytes to sniff.
BODY_TYPES = (
    "application/json",
    "application/zip",
    "application/x-zip-compressed",
    "application/octet-stream",
)
MAX_EXPORT = 10_000
UNPACK_FACTOR = 4
_JSON_FIELDS = ("name", "title", "tags", "metadata", "ttl_seconds")


class ExportBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[list[str], Meta(min_length=1, max_length=1000)] | None = None
    status: Literal["idle", "running", "requires_action", "failed", "archived"] | None = None
    tags: Tags = []
    agent_id: str | None = None
    work_dir: str | None = None
    name: str | None = None


class ImportDoc(msgspec.Struct, forbid_unknown_fields=True):
    """A json export, as GET /sessions/{id}/export?format=json gives it."""

    version: int
    session: SessionRecord
    runs: list[Run]
    messages: list[Message]
    agents: list[Agent] = []
    keep_ids: bool = False


class ImportResult(msgspec.Struct):
    sessions: list[SessionRecord]
    message_count: int
    run_count: int
    agents: list[Agent]  # the agents the import created
    repaired: list[restore.Repaired]  # tool calls it answered (see restore.py)


export_decoder = msgspec.json.Decoder(ExportBody)
doc_decoder = msgspec.json.Decoder(ImportDoc)
entries_decoder = msgspec.json.Decoder(list[bundle.BundleEntry])
agents_decoder = msgspec.json.Decoder(list[Agent])
message_decoder = msgspec.json.Decoder(Message)


# -- export ---------------------------------------------------------------------------------
async def exported(st: Store, tenant: str, key: str) -> SessionExport:
    record = await st.sessions.get(key, tenant)
    messages = await st.messages.history(record.id)
    runs = await st.runs.of_session(record.id)  # after the messages: every run they name
    return SessionExport(transcript.VERSION, record, runs, messages)


async def agents_of(st: Store, tenant: str, records: list[SessionRecord]) -> list[Agent]:
    keys = dict.fromkeys(r.agent_id for r in records)
    return [await st.agents.get(key, tenant) for key in keys]


async def export_session(request: Request) -> Response:
    form = query_choice(request, "format", ("json", "jsonl", "markdown"), "json")
    with_agents = _query_bool(request, "with_agents")
    st = store(request)
    tenant = tenant_of(request)
    doc = await exported(st, tenant, request.path_params["session_id"])
    if with_agents:
        doc.agents = await agents_of(st, tenant, [doc.session])
    extension = {"json": "json", "jsonl": "jsonl", "markdown": "md"}[form]
    headers = {"Content-Disposition": f'attachment; filename="{doc.session.id}.{extension}"'}
    if form == "jsonl":
        return Response(transcript.jsonl(doc.messages), 200, headers, "application/x-ndjson")
    if form == "markdown":
        return Response(transcript.markdown(doc), 200, headers, "text/markdown; charset=utf-8")
    return json_response(doc, 200, headers)


async def export_bundle(request: Request) -> Response:
    body = await decode_body(request, export_decoder)
    st = store(request)
    tenant = tenant_of(request)
    records = await _selected(st, tenant, body)
    with_agents = _query_bool(request, "with_agents")
    agents = await agents_of(st, tenant, records) if with_agents else None
    exports = [await exported(st, tenant, record.id) for record in records]
    stamp = now()
    data = await asyncio.to_thread(bundle.pack, exports, stamp, agents)
    name = f"sessiond-export-{stamp[:19].replace(':', '')}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, 200, headers, "application/zip")


async def _selected(st: Store, tenant: str, body: ExportBody) -> list[SessionRecord]:
    filtered = any(
        (body.status, body.tags, body.agent_id, body.work_dir is not None, body.name is not None)
    )
    if body.ids is not None:
        if filtered:
            raise InvalidRequest("give ids or filters, not both", field="ids")
        unique = list(dict.fromkeys(body.ids))
        return [await st.sessions.get(key, tenant) for key in unique]
    where = SessionFilter(
        status=body.status,
        tags=body.tags,
        agent_id=body.agent_id,
        work_dir=body.work_dir,
        name=body.name,
        order="created_at",
        include_archived=body.status is None,
    )
    found: list[SessionRecord] = []
    cursor: str | None = None
    while True:
        page = await st.sessions.page(tenant, where, 1000, cursor)
        found += page.data
        if len(found) > MAX_EXPORT:
            raise InvalidRequest(
                f"more than {MAX_EXPORT} sessions match; narrow the filters or give ids"
            )
        if page.next_cursor is None:
            return found[::-1]
        cursor = page.next_cursor


# -- import ---------------------------------------------------------------------------------
async def import_sessions(request: Request) -> Response:
    limit = request.app.state.settings.max_import_bytes
    data = await read_body(request, limit)
    if not data.strip():
        raise InvalidRequest("the request body is empty; send a json export or a zip bundle")
    keep_ids = _query_bool(request, "keep_ids")
    if _is_zip(request, data):
        exports, carried = await asyncio.to_thread(_from_bundle, data, limit * UNPACK_FACTOR)
    else:
        doc = _decode(doc_decoder, data, "the json export")
        _check_version(doc.version)
        exports = [SessionExport(doc.version, doc.session, doc.runs, doc.messages)]
        carried = doc.agents
        keep_ids = keep_ids or doc.keep_ids
    for export in exports:
        _check_fields(export.session)
    planned, repaired = restore.plan(exports, keep_ids, now())
    st = store(request)
    tenant = tenant_of(request)
    planned, created = await _placed(request, st, planned, carried)
    items = [(e.session, e.messages, e.runs) for e in planned]
    await st.transfer.restore(tenant, items, created)
    sessions = [await st.sessions.get(e.session.id, None) for e in planned]
    messages = sum(len(e.messages) for e in planned)
    runs = sum(len(e.runs) for e in planned)
    return json_response(ImportResult(sessions, messages, runs, created, repaired), 201)


def _from_bundle(data: bytes, unpacked_limit: int) -> tuple[list[SessionExport], list[Agent]]:
    files = bundle.unpack(data, unpacked_limit)
    entries = _decode(entries_decoder, files.sessions, bundle.SESSIONS)
    agents: list[Agent] = []
    if files.agents is not None:
        agents = _decode(agents_decoder, files.agents, bundle.AGENTS)
    by_session: dict[str, list[Message]] = {entry.session.id: [] for entry in entries}
    for number, line in enumerate(files.messages.splitlines(), 1):
        if not line.strip():
            continue
        message = _decode(message_decoder, line, f"{bundle.MESSAGES} line {number}")
        if message.session_id not in by_session:
            raise InvalidRequest(
                f"{bundle.MESSAGES} line {number}: session {message.session_id!r} is not in "
                f"{bundle.SESSIONS}"
            )
        by_session[message.session_id].append(message)
    exports = [
        SessionExport(files.manifest.version, e.session, e.runs, by_session[e.session.id])
        for e in entries
    ]
    _check_counts(files.manifest.counts, exports)
    return exports, agents


def _check_counts(counts: bundle.Counts, exports: list[SessionExport]) -> None:
    found = bundle.Counts(
        len(exports), sum(len(e.messages) for e in exports), sum(len(e.runs) for e in exports)
    )
    if found != counts:
        raise InvalidRequest(
            f"the bundle holds {found.sessions} sessions, {found.messages} messages and "
            f"{found.runs} runs, but its manifest counts {counts.sessions}, {counts.messages} "
            f"and {counts.runs}"
        )


async def _placed(
    request: Request, st: Store, planned: list[SessionExport], carried: list[Agent]
) -> tuple[list[SessionExport], list[Agent]]:
    """Each session with the agent and work_dir it will have here, both checked; and the
    carried agents to create for them."""
    agent_id = request.query_params.get("agent_id") or None
    tenant = tenant_of(request)
    if agent_id is not None:
        await st.agents.get(agent_id, tenant)
    work_dir = request.query_params.get("work_dir") or None
    active = runner(request)

    def checked(agent: Agent) -> Agent:
        return agentspec.check(agent, active.provider_ctx, active.settings.tools)

    agents, created = (
        await _agents_here(st, tenant, planned, carried, checked) if agent_id is None else ({}, [])
    )
    placed = []
    for export in planned:
        session = msgspec.structs.replace(
            export.session,
            agent_id=agent_id or agents[export.session.agent_id],
            work_dir=check_work_dir(request, work_dir or export.session.work_dir),
        )
        placed.append(msgspec.structs.replace(export, session=session))
    return placed, created


async def _agents_here(
    st: Store,
    tenant: str,
    planned: list[SessionExport],
    carried: list[Agent],
    checked: Callable[[Agent], Agent],
) -> tuple[dict[str, str], list[Agent]]:
    """Each exported agent id → the id of the agent its sessions get here: the server's
    agent of that id, else the server's agent of the carried agent's name, else the carried
    agent, to be created (under a new id if another tenant's agent has its id). An agent
    neither here nor carried is refused."""
    by_id = {agent.id: agent for agent in carried}
    here: dict[str, str] = {}
    created: list[Agent] = []
    for key in dict.fromkeys(e.session.agent_id for e in planned):
        try:
            here[key] = (await st.agents.get(key, tenant)).id
            continue
        except NotFound:
            agent = by_id.get(key)
        if agent is None:
            raise InvalidRequest(
                f"agent {key!r} does not exist on this server; create it, export with "
                "?with_agents=true, or import with ?agent_id=<id> (for instance default) to "
                "give the sessions another agent",
                field="agent_id",
            )
        same_name = await st.agents.find_by_name(agent.name, tenant)
        if same_name is not None:
            here[key] = same_name.id
            continue
        if await _taken(st, agent.id):
            agent = msgspec.structs.replace(agent, id=new_ulid())
        created.append(_creatable(agent, checked))
        here[key] = agent.id
    return here, created


async def _taken(st: Store, agent_id: str) -> bool:
    """The id is another tenant's agent's (ids are unique across tenants)."""
    try:
        await st.agents.get(agent_id, None)
    except NotFound:
        return False
    return True


def _creatable(agent: Agent, checked: Callable[[Agent], Agent]) -> Agent:
    """A carried agent, checked as POST /agents checks a new one."""
    where = f"agent {agent.id!r}"
    if not agent.id or len(agent.id) > 100:
        raise InvalidRequest(f"{where}: an agent id must hold 1 to 100 characters")
    fields = {name: getattr(agent, name) for name in CreateAgent.__struct_fields__}
    try:
        msgspec.convert(msgspec.to_builtins(fields), CreateAgent)
        restore.check_stamps(where, [agent.created_at, agent.updated_at])
        return checked(agent)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{where}: {exc}", field=f"agents.{field_of(str(exc))}") from exc
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}", field="agents") from exc


def _check_fields(session: SessionRecord) -> None:
    """The editable fields obey the same rules as on create."""
    values: dict[str, Any] = {name: getattr(session, name) for name in _JSON_FIELDS}
    try:
        msgspec.convert(values, UpdateSession)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"session {session.id!r}: {exc}", field=f"session.{field_of(str(exc))}"
        ) from exc
    check_name(session.name)


def _check_version(version: int) -> None:
    if version != transcript.VERSION:
        raise InvalidRequest(
            f"export version {version} is not supported (this server reads version "
            f"{transcript.VERSION})",
            field="version",
        )


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"{what} is invalid: {exc}", field=field_of(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest(f"{what} is nested too deeply") from exc


def _is_zip(request: Request, data: bytes) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/zip", "application/x-zip-compressed"):
        return True
    if kind == "application/json":
        return False
    return data.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _query_bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise InvalidRequest(f"{name} must be true or false", field=name)


routes = [
    Route("/sessions/export", export_bundle, methods=["POST"]),
    Route("/sessions/import", import_sessions, methods=["POST"]),
    Route("/sessions/{session_id}/export", export_session, methods=["GET"]),
]
