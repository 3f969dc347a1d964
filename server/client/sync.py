"""`Client`: sessiond over HTTP, blocking calls (httpx). `AsyncClient` (aio.py) is the same
with `await` and `async for`; `LocalClient` (local.py) the same in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import httpx

from server.client import wire
from server.client.errors import Unreachable, from_response
from server.events import Event
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
from server.providers.sse import sse_events_sync

T = TypeVar("T")


class Client:
    """`Client(url, api_key=...)`; the url defaults to $SESSIOND_URL, then
    http://127.0.0.1:2323, the key to $SESSIOND_API_KEY. Use it as a context manager, or
    `close()` it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_reconnects: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = wire.base_url(url)
        self.max_reconnects = max_reconnects
        # a blocking turn answers when its run ends, however long that takes
        self.blocking = httpx.Timeout(timeout, read=None)
        self.http = httpx.Client(
            base_url=self.url,
            headers=wire.headers_for(api_key),
            timeout=httpx.Timeout(timeout, read=wire.READ_TIMEOUT_S),
            transport=transport,
        )
        self.agents = Agents(self)
        self.sessions = Sessions(self)
        self.messages = Messages(self)
        self.runs = Runs(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- turns ------------------------------------------------------------------------------
    def send(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> MessageResult:
        """A blocking turn: the answer once the run has ended (or paused for client tools).
        A failed run raises its error."""
        body = wire.message_body(message, agent_id, if_busy, tools)
        path = wire.session_path(session, "message")
        return self.call("POST", path, MessageResult, body, timeout=self.blocking)

    def stream(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
        cancel_on_disconnect: bool = False,
    ) -> Iterator[Event]:
        """A streamed turn: its events up to `done`. A dropped connection is resumed from the
        last event with `Last-Event-ID`: no event is missed or given twice."""
        body = wire.message_body(message, agent_id, if_busy, tools, cancel_on_disconnect)
        follow = wire.Follow(session, None, 0, self.max_reconnects)
        first = self.http.build_request(
            "POST", wire.session_path(session, "message", "stream"), content=body, headers=wire.JSON
        )
        return self.follow(follow, first)

    # -- plumbing ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> bytes:
        headers = wire.JSON if body is not None else None
        try:
            response = self.http.request(method, path, content=body, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach sessiond at {self.url}: {exc}") from exc
        if response.is_error:
            raise from_response(response.status_code, response.content, response.headers)
        return response.content

    def call(self, method: str, path: str, cls: type[T], body: bytes | None = None, **kw: Any) -> T:
        return wire.decode(self.request(method, path, body, **kw), cls)

    def pages(self, path: str, cls: type[Page[T]], params: dict[str, Any]) -> Iterator[T]:
        """Every item of a list, page after page, following `next_cursor`."""
        cursor: str | None = None
        while True:
            query = {**params, "cursor": cursor} if cursor else params
            page = self.call("GET", path, cls, params=query)
            yield from page.data
            cursor = page.next_cursor
            if not cursor:
                return

    def follow(self, follow: wire.Follow, first: httpx.Request | None = None) -> Iterator[Event]:
        request = first
        while not follow.done:
            if request is None:
                request = self.http.build_request(
                    "GET", follow.path(), headers=follow.resume_headers()
                )
            try:
                yield from self._read(follow, request)
                if follow.done:
                    return
                problem: Exception | None = None
            except httpx.TransportError as exc:
                problem = exc
            request = None
            time.sleep(follow.broke(problem))

    def _read(self, follow: wire.Follow, request: httpx.Request) -> Iterator[Event]:
        response = self.http.send(request, stream=True)
        try:
            if response.status_code == 204:  # the run has ended and nothing follows
                follow.done = True
                return
            if response.is_error:
                response.read()
                raise from_response(response.status_code, response.content, response.headers)
            follow.started(response.headers)
            for block in sse_events_sync(response.iter_text()):
                if follow.done:  # read on to the stream's end, which the server sends next
                    continue
                event = follow.take(block)
                if event is not None:
                    yield event
        finally:
            response.close()


class Agents:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, *, page_size: int = 100) -> Iterator[AgentView]:
        return self.client.pages("/agents", Page[AgentView], {"limit": page_size})

    def get(self, agent: str) -> AgentView:
        return self.client.call("GET", f"/agents/{wire.part(agent)}", AgentView)

    def create(self, name: str, provider: str, **fields: Any) -> AgentView:
        body = wire.encode(wire.given({"name": name, "provider": provider, **fields}))
        return self.client.call("POST", "/agents", AgentView, body)

    def update(self, agent: str, **changes: Any) -> AgentView:
        body = wire.encode(changes)
        return self.client.call("PUT", f"/agents/{wire.part(agent)}", AgentView, body)

    def delete(self, agent: str) -> None:
        self.client.request("DELETE", f"/agents/{wire.part(agent)}")


class Sessions:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, *, page_size: int = 100, **filters: Any) -> Iterator[SessionRecord]:
        params = {**wire.given(filters), "limit": page_size}
        return self.client.pages("/sessions", Page[SessionRecord], params)

    def get(self, session: str) -> SessionRecord:
        return self.client.call("GET", wire.session_path(session), SessionRecord)

    def create(self, **fields: Any) -> SessionRecord:
        """`name`, `agent_id`, `work_dir`, `title`, `tags`, `metadata`, `ttl_seconds`,
        `if_exists` ("resume": the session of that name if there is one)."""
        body = wire.encode(wire.given(fields))
        return self.client.call("POST", "/sessions", SessionRecord, body)

    def update(self, session: str, **changes: Any) -> SessionRecord:
        body = wire.encode(changes)
        return self.client.call("PATCH", wire.session_path(session), SessionRecord, body)

    def delete(self, session: str) -> None:
        self.client.request("DELETE", wire.session_path(session))

    def archive(self, session: str) -> SessionRecord:
        return self.client.call("POST", wire.session_path(session, "archive"), SessionRecord)

    def unarchive(self, session: str) -> SessionRecord:
        return self.client.call("POST", wire.session_path(session, "unarchive"), SessionRecord)


class Messages:
    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self, session: str, *, after: int = 0, page_size: int = 100) -> Iterator[Message]:
        params = {"after": after, "limit": page_size}
        return self.client.pages(wire.session_path(session, "messages"), Page[Message], params)


class Runs:
    def __init__(self, client: Client) -> None:
        self.client = client

    def start(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> RunStarted:
        """A background run: answered at once; follow it with `events()`."""
        body = wire.message_body(message, agent_id, if_busy, tools)
        return self.client.call("POST", wire.session_path(session, "runs"), RunStarted, body)

    def get(self, session: str, run_id: str) -> Run:
        return self.client.call("GET", wire.run_path(session, run_id), Run)

    def list(self, session: str, *, page_size: int = 100) -> Iterator[Run]:
        path = wire.session_path(session, "runs")
        return self.client.pages(path, Page[Run], {"limit": page_size})

    def cancel(self, session: str, run_id: str) -> Run:
        """Stop the run; answers once it has stopped (a finished run is left as it is)."""
        return self.client.call("POST", wire.run_path(session, run_id, "cancel"), Run)

    def tool_results(
        self, session: str, run_id: str, results: Sequence[ToolResultBlock]
    ) -> MessageResult:
        """Answer the client tools a run waits for; the answer once it has ended again."""
        path = wire.run_path(session, run_id, "tool_results")
        body = wire.results_body(results)
        params = {"wait": "true"}
        timeout = self.client.blocking
        return self.client.call("POST", path, MessageResult, body, params=params, timeout=timeout)

    def events(self, session: str, run_id: str, *, after: int = 0) -> Iterator[Event]:
        """The run's events after the `after`-th, up to `done`: the stored ones, then live,
        resumed across dropped connections."""
        follow = wire.Follow(session, run_id, after, self.client.max_reconnects)
        return self.client.follow(follow)
