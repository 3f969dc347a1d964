"""/sessions/{id}/runs/…: read runs, follow or replay their events, cancel them; and the
session channel /sessions/{id}/events."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import sse
from server.api.request import json_response, page_params, parse_count, runner, session_of, store
from server.api.tokens import events_url
from server.errors import InvalidRequest, NotFound
from server.ids import stamp_of
from server.models import FINISHED_STATUSES, Run


def last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query_params.get("last_event_id")


def run_position(request: Request) -> int:
    raw = last_event_id(request)
    if raw is None or raw == "":
        return 0
    if ":" in raw:  # an id from the session channel: <run_id>:<seq>
        raw = raw.rsplit(":", 1)[1]
    return parse_count(raw, "Last-Event-ID")


async def _run(request: Request) -> Run:
    st = store(request)
    record = await session_of(request)
    stored = await st.runs.get(request.path_params["run_id"], record.id)
    position = runner(request).queue_position(stored.run.id)
    return msgspec.structs.replace(stored.run, queue_position=position)


async def list_runs(request: Request) -> Response:
    st = store(request)
    record = await session_of(request)
    limit, cursor = page_params(request)
    return json_response(await st.runs.page(record.id, limit, cursor))


async def get_run(request: Request) -> Response:
    return json_response(await _run(request))


async def run_events(request: Request) -> Response:
    run = await _run(request)
    after = run_position(request)
    if run.status in FINISHED_STATUSES and not runner(request).is_live(run.id):
        last = await store(request).events.last_seq(run.id)
        if after >= last:
            # Nothing will ever follow: 204 tells a browser's EventSource not to reconnect.
            return Response(status_code=204)
    batches = runner(request).follow(run.id, after, request.app.state.settings.ping_s)
    return sse.stream(request, sse.framed(request, batches, sse.run_frames))


async def cancel_run(request: Request) -> Response:
    run = await _run(request)
    await runner(request).cancel_run(run)
    return json_response(await _run(request))


async def session_events(request: Request) -> Response:
    st = store(request)
    record = await session_of(request)
    resume = last_event_id(request)
    position: tuple[str, int] | None = None
    if resume:
        run_id, _, seq = resume.rpartition(":")
        if not run_id:
            raise InvalidRequest(
                f"Last-Event-ID {resume[:80]!r} is not a session channel id (<run_id>:<seq>)"
            )
        position = (run_id, parse_count(seq, "Last-Event-ID"))
        try:
            await st.runs.get(run_id, record.id)
        except NotFound as exc:
            # else the channel would replay every run after that id, or wait silently
            raise InvalidRequest(
                f"Last-Event-ID {resume[:80]!r} names no run of session {record.id}"
            ) from exc
    batches = runner(request).watch(record.id, position, request.app.state.settings.ping_s)
    return sse.stream(request, sse.framed(request, batches, sse.session_frames))


class EventsUrl(msgspec.Struct):
    events_url: str
    expires_at: str | None  # None: auth is off, the URL needs no token


async def get_events_url(request: Request) -> Response:
    """A URL a browser's EventSource can open: the session's channel, or with `?run_id=` one
    run's events (a new token for a stream whose token has expired)."""
    record = await session_of(request)
    run_id = request.query_params.get("run_id") or ""
    if run_id:
        await store(request).runs.get(run_id, record.id)
    url, expires = events_url(request, record.id, run_id)
    stamp = None if expires is None else stamp_of(expires)
    return json_response(EventsUrl(url, stamp), 200, {"Cache-Control": "no-store"})


routes = [
    Route("/sessions/{session_id}/events_url", get_events_url, methods=["GET"]),
    Route("/sessions/{session_id}/runs", list_runs, methods=["GET"]),
    Route("/sessions/{session_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route("/sessions/{session_id}/runs/{run_id}/events", run_events, methods=["GET"]),
    Route("/sessions/{session_id}/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/sessions/{session_id}/events", session_events, methods=["GET"]),
]
