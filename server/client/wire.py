"""What the sync and the async client share: the paths, the request bodies, the decoders of
the answers, and the bookkeeping of a followed run (the last event id, the reconnects)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from server import events
from server.client.errors import Unreachable
from server.events import Done, Event, Ping
from server.models import (
    AgentView,
    ClientTool,
    ContentBlock,
    Message,
    MessageResult,
    Page,
    Run,
    RunStarted,
    SessionRecord,
    ToolResultBlock,
)
from server.providers.sse import SseEvent

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:2323"
RUN_ID_HEADER = "sessiond-run-id"
# a run's stream may be quiet for up to the server's ping interval between events
READ_TIMEOUT_S = 300.0

DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls)
    for cls in (
        AgentView,
        SessionRecord,
        Run,
        RunStarted,
        MessageResult,
        Page[AgentView],
        Page[SessionRecord],
        Page[Message],
        Page[Run],
    )
}


def decode(data: bytes, cls: type[T]) -> T:
    value: T = DECODERS[cls].decode(data)
    return value


def base_url(url: str | None) -> str:
    return (url or os.environ.get("SESSIOND_URL") or DEFAULT_URL).rstrip("/")


def headers_for(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("SESSIOND_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def part(key: str) -> str:
    """A session's id or name, or an agent's, as one path segment."""
    return quote(key, safe="")


def session_path(session: str, *rest: str) -> str:
    return "/".join([f"/sessions/{part(session)}", *rest])


def run_path(session: str, run_id: str, *rest: str) -> str:
    return session_path(session, "runs", part(run_id), *rest)


def given(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A create body: the fields the caller gave (None means "not given")."""
    return {name: value for name, value in fields.items() if value is not None}


def message_body(
    message: str | list[ContentBlock],
    agent_id: str | None,
    if_busy: str | None,
    tools: list[ClientTool] | None,
    cancel_on_disconnect: bool = False,
) -> bytes:
    body = given({"message": message, "agent_id": agent_id, "if_busy": if_busy, "tools": tools})
    if cancel_on_disconnect:
        body["cancel_on_disconnect"] = True
    return msgspec.json.encode(body)


def results_body(results: Sequence[ToolResultBlock]) -> bytes:
    return msgspec.json.encode({"results": results})


def encode(body: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(body)


JSON = {"Content-Type": "application/json"}


class Follow:
    """One run followed across connections: which event came last (its `id:`, the run's
    sequence), so that a reconnect asks for what follows it with `Last-Event-ID` and drops
    any event it has already given (none should come: the server resumes exactly)."""

    def __init__(self, session: str, run_id: str | None, after: int, max_reconnects: int):
        self.session = session
        self.run_id = run_id
        self.last = after
        self.max_reconnects = max_reconnects
        self.failures = 0
        self.done = False

    def path(self) -> str:
        assert self.run_id is not None
        return run_path(self.session, self.run_id, "events")

    def resume_headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last)} if self.last else {}

    def started(self, headers: Mapping[str, str]) -> None:
        self.run_id = self.run_id or headers.get(RUN_ID_HEADER)

    def take(self, block: SseEvent) -> Event | None:
        """The event a block holds, if it is one to give (not a ping, not seen before)."""
        if not block.dispatched or block.event == "ping":
            return None
        if block.id is not None:
            seq = int(block.id)
            if seq <= self.last:
                return None
            self.last = seq
        self.failures = 0  # the connection delivered: a later cut starts counting afresh
        event = events.decode(block.data.encode())
        if isinstance(event, Ping):
            return None
        if isinstance(event, Done):
            self.done = True
        return event

    def broke(self, exc: Exception | None) -> float:
        """The connection ended before `done`: the seconds to wait before the next try, or
        Unreachable once there is nothing to resume or the tries are spent."""
        if self.run_id is None:
            raise Unreachable(
                f"cannot reach sessiond, or its stream broke off before naming its run: {exc}"
            ) from exc
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise Unreachable(
                f"the stream of run {self.run_id} broke off {self.failures} times in a row: {exc}"
            ) from exc
        return 0.0 if self.failures == 1 else min(0.1 * 2**self.failures, 3.0)
