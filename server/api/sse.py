"""Server-Sent Events responses: `retry:` first, events coalesced into one chunk per batch,
a `ping` event (no `id:`) whenever the stream has been quiet for the ping interval."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.requests import Request

from server import events
from server.runlog import Row

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def own_shutdown() -> None:
    """Keep sse-starlette out of shutdown: its default patches uvicorn to set a process-wide
    flag that cancels every stream at once (and stays set for later servers in the process).
    Our runner drains instead: run streams end after their `done`, the session channel when
    the runner closes it."""
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]


def run_frames(rows: list[Row]) -> bytes:
    """A run's own stream: `id:` is the run's sequence number."""
    return b"".join(events.frame(seq, type_, data) for _, seq, type_, data in rows)


def session_frames(rows: list[Row]) -> bytes:
    """The session channel: `id:` is `<run_id>:<seq>` and `data` names the run."""
    return b"".join(
        events.frame(f"{run_id}:{seq}", type_, events.with_run_id(type_, data, run_id))
        for run_id, seq, type_, data in rows
    )


async def framed(
    request: Request,
    batches: AsyncIterator[list[Row]],
    encode: Callable[[list[Row]], bytes],
) -> AsyncIterator[bytes]:
    settings = request.app.state.settings
    yield events.retry_frame(settings.sse_retry_ms)
    async for rows in batches:
        yield encode(rows) if rows else events.PING_FRAME


def stream(
    request: Request,
    body: AsyncIterator[bytes],
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> EventSourceResponse:
    async def closed(message: object) -> None:
        if on_disconnect is not None:
            await on_disconnect()

    return EventSourceResponse(
        body,
        headers=HEADERS,
        ping=0,  # our own ping events are sent only while a stream is quiet
        send_timeout=request.app.state.settings.sse_send_timeout_s,
        client_close_handler_callable=closed,
    )
