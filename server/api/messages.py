"""POST /sessions/{id}/message (blocking) and /message/stream (SSE), and POST …/runs (202)."""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import sse
from server.api.limits import key_of, limits
from server.api.request import decode_body, json_response, query_choice, runner, tenant_of
from server.api.tokens import events_url
from server.errors import ApiError, InvalidRequest, status_for
from server.models import (
    ClientTool,
    ContentBlock,
    MessageResult,
    RunStarted,
    TextBlock,
    ToolCallOut,
    ToolResultBlock,
    result_of,
)
from server.runs.active import RunRequest
from server.runs.handle import RunHandle


class MessageBody(msgspec.Struct, forbid_unknown_fields=True):
    message: str | list[ContentBlock]
    agent_id: str | None = None
    if_busy: Literal["reject", "queue", "interrupt"] = "reject"
    cancel_on_disconnect: bool = False
    tools: list[ClientTool] = []


class ToolResultsBody(msgspec.Struct, forbid_unknown_fields=True):
    results: list[ToolResultBlock]


__all__ = ["MessageResult", "RunStarted", "ToolCallOut", "result_of", "routes"]

body_decoder = msgspec.json.Decoder(MessageBody)
results_decoder = msgspec.json.Decoder(ToolResultsBody)


def to_request(body: MessageBody) -> RunRequest:
    if isinstance(body.message, str):
        content: list[ContentBlock] = [TextBlock(body.message)]
    else:
        content = list(body.message)
    if not any(isinstance(b, TextBlock) and b.text.strip() for b in content):
        raise InvalidRequest("message must hold some text", field="message")
    if any(not isinstance(b, TextBlock) for b in content):
        raise InvalidRequest(
            "a message may hold only text blocks; send tool results to "
            "POST /sessions/{id}/runs/{run_id}/tool_results",
            field="message",
        )
    return RunRequest(content, body.agent_id, body.if_busy, body.cancel_on_disconnect, body.tools)


async def start(request: Request) -> RunHandle:
    body = await decode_body(request, body_decoder)
    limits(request).start_run(key_of(request))
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be at most 255 characters")
    return await runner(request).submit(
        tenant_of(request), request.path_params["session_id"], to_request(body), key
    )


async def finished_result(started: RunHandle) -> MessageResult:
    outcome = await started.outcome()
    run = outcome.run
    if run.status == "failed" and run.error is not None:
        error = ApiError(run.error.message, run_id=run.id)
        error.type = run.error.type
        error.status = status_for(run.error.type)
        raise error
    return result_of(run, outcome.messages, outcome.held)


RUN_ID_HEADER = "Sessiond-Run-Id"  # the run a message started (or its key's earlier one)


async def refuse_unusable(started: RunHandle) -> None:
    """A run starting now with an agent that cannot run fails before it asks any upstream:
    answer with its error (422 agent_unusable) rather than open a stream or accept it. A
    queued run fails when its turn comes, in its events."""
    if started.starts_unusable():
        await finished_result(started)


async def post_message(request: Request) -> Response:
    started = await start(request)
    result = await finished_result(started)
    return json_response(result, 200, {RUN_ID_HEADER: started.id})


async def stream_message(request: Request) -> Response:
    limits(request).check_stream(key_of(request))  # before a run starts that none could read
    started = await start(request)
    await refuse_unusable(started)
    return stream_run(request, started)


def stream_run(request: Request, started: RunHandle, after: int = 0) -> Response:
    batches = started.follow(after, request.app.state.settings.ping_s)

    async def disconnected() -> None:
        if started.cancel_on_disconnect:
            await started.cancel()

    response = sse.stream(request, sse.framed(request, batches, sse.run_frames), disconnected)
    response.headers[RUN_ID_HEADER] = started.id  # before the first event: cancel or resume by it
    return response


async def start_run(request: Request) -> Response:
    started = await start(request)
    await refuse_unusable(started)
    sid = started.session_id
    url, _ = events_url(request, sid, started.id)
    position = started.queue_position()
    status = started.status()
    body = RunStarted(started.id, sid, status, position, url)
    headers = {"Location": f"/sessions/{sid}/runs/{started.id}", RUN_ID_HEADER: started.id}
    return json_response(body, 202, headers)


async def tool_results(request: Request) -> Response:
    """Results of client tools: the paused run goes on, streamed (or blocking, ?wait=true)."""
    body = await decode_body(request, results_decoder)
    wait = query_choice(request, "wait", ("true", "false"), "false") == "true"
    resumed = await runner(request).resume(
        tenant_of(request),
        request.path_params["session_id"],
        request.path_params["run_id"],
        body.results,
    )
    if wait:
        result = await finished_result(resumed)
        return json_response(result, 200, {RUN_ID_HEADER: resumed.id})
    await refuse_unusable(resumed)
    return stream_run(request, resumed, after=resumed.resumed_after)


routes = [
    Route("/sessions/{session_id}/message", post_message, methods=["POST"]),
    Route("/sessions/{session_id}/message/stream", stream_message, methods=["POST"]),
    Route("/sessions/{session_id}/runs", start_run, methods=["POST"]),
    Route("/sessions/{session_id}/runs/{run_id}/tool_results", tool_results, methods=["POST"]),
]
