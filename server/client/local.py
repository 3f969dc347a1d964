"""`LocalClient(db=PATH)` and `AsyncLocalClient`: the SDK's interface in-process. Turns run on
the server's own runner and store, on the database file, with no HTTP: the same results, the
same events, the same exceptions (the store and the runner raise them) as over the wire.

Like `sessiond serve`, a local client holds the database's lock while it is open (one
process runs a database's turns), repairs what a dead process left unfinished, and makes the
built-in `default` agent. `LocalClient` runs `AsyncLocalClient` on an event loop of its own
in a background thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from server import events, providers
from server.client.errors import error_of
from server.errors import InvalidRequest, status_for
from server.events import Done, Event, EventRow
from server.ids import new_ulid, now
from server.models import (
    DEFAULT_TENANT,
    Agent,
    AgentView,
    ClientTool,
    ContentBlock,
    Message,
    MessageResult,
    Page,
    Run,
    RunStarted,
    SessionRecord,
    TextBlock,
    ToolResultBlock,
    check_session_name,
    new_session_record,
    result_of,
    work_dir_within,
)
from server.providers.base import ProviderContext, ProviderSettings
from server.runs.active import IfBusy, RunRequest
from server.runs.agentspec import check, default_agent, unusable_reason
from server.runs.channel import Hub
from server.runs.handle import RunHandle
from server.runs.runner import Runner, RunnerSettings
from server.store import DEFAULT_AGENT_ID, SessionFilter, SqliteStore, open_store
from server.store.lock import DatabaseLock
from server.tools.base import ToolSettings

T = TypeVar("T")
PING_S = 15.0  # how long a quiet follower waits before it looks again
_AGENT_DEFAULTS: dict[str, Any] = {
    "model": None,
    "system": None,
    "tools": [],
    "max_steps": 16,
    "max_tokens": None,
    "temperature": None,
    "options": {},
    "max_run_seconds": None,
}
_SESSION_FIELDS = frozenset(
    {"name", "agent_id", "work_dir", "title", "tags", "metadata", "ttl_seconds", "if_exists"}
)


def _request(
    message: str | list[ContentBlock],
    agent_id: str | None,
    if_busy: str | None,
    tools: list[ClientTool] | None,
    cancel_on_disconnect: bool = False,
) -> RunRequest:
    content: list[ContentBlock] = [TextBlock(message)] if isinstance(message, str) else message
    if not any(isinstance(b, TextBlock) and b.text.strip() for b in content):
        raise InvalidRequest("message must hold some text", field="message")
    if any(not isinstance(b, TextBlock) for b in content):
        raise InvalidRequest("a message may hold only text blocks", field="message")
    if if_busy not in (None, "reject", "queue", "interrupt"):
        raise InvalidRequest("if_busy must be one of reject, queue, interrupt", field="if_busy")
    busy: IfBusy = if_busy or "reject"  # type: ignore[assignment]
    return RunRequest(content, agent_id, busy, cancel_on_disconnect, list(tools or []))


async def _answer(handle: RunHandle) -> MessageResult:
    """The blocking answer; a failed run raises its error, as the HTTP answer would."""
    outcome = await handle.outcome()
    run = outcome.run
    if run.status == "failed" and run.error is not None:
        kind = run.error.type
        raise error_of(kind, run.error.message, status_for(kind), {"run_id": run.id})
    return result_of(run, outcome.messages, outcome.held)


def _events(rows: list[EventRow]) -> Iterator[Event]:
    for _, _, type_, data in rows:
        if type_ != "ping":
            yield events.decode(data)


class AsyncLocalClient:
    """`async with AsyncLocalClient(db="data/sessiond.db") as client:` — the interface of
    `AsyncClient`. `allow_roots` are the folders a session's work_dir may lie in (default:
    the current one), `env` where provider keys are read (default: the environment)."""

    def __init__(
        self,
        db: str | os.PathLike[str],
        *,
        allow_roots: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        default_model: str | None = None,
        settings: RunnerSettings | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.db = os.fspath(db)
        self.allow_roots = list(allow_roots) if allow_roots is not None else [os.getcwd()]
        self.env = dict(os.environ if env is None else env)
        self.default_model = default_model
        self.settings = settings or RunnerSettings(tools=ToolSettings(hidden_paths=(self.db,)))
        self.tenant = tenant
        self.agents = AsyncLocalAgents(self)
        self.sessions = AsyncLocalSessions(self)
        self.messages = AsyncLocalMessages(self)
        self.runs = AsyncLocalRuns(self)
        self._lock: DatabaseLock | None = None
        self._store: SqliteStore | None = None
        self._http: httpx.AsyncClient | None = None
        self._runner: Runner | None = None

    async def __aenter__(self) -> AsyncLocalClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.db)), exist_ok=True)
        lock = DatabaseLock(self.db)
        lock.acquire()  # another process serving this database: it says which
        self._lock = lock
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        store = open_store(self.db)
        await store.open()
        self._store = store
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0))
        access = providers.access_of([], [])
        context = ProviderContext(self._http, ProviderSettings(), self.env, access)
        self._runner = Runner(store, Hub(), context, self.settings)
        await store.agents.ensure_default(default_agent(self.env, self.default_model))
        await self._runner.recover()

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            self._runner = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def store(self) -> SqliteStore:
        if self._store is None:
            raise RuntimeError("the local client is not open: use `async with` or open()")
        return self._store

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise RuntimeError("the local client is not open: use `async with` or open()")
        return self._runner

    # -- turns ------------------------------------------------------------------------------
    async def send(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> MessageResult:
        request = _request(message, agent_id, if_busy, tools)
        return await _answer(await self.runner.submit(self.tenant, session, request))

    async def stream(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
        cancel_on_disconnect: bool = False,
    ) -> AsyncIterator[Event]:
        request = _request(message, agent_id, if_busy, tools, cancel_on_disconnect)
        handle = await self.runner.submit(self.tenant, session, request)
        if handle.starts_unusable():
            await _answer(handle)
        finished = False
        try:
            async for event in self.follow(handle.follow(0, PING_S)):
                finished = isinstance(event, Done)
                yield event
        finally:
            if not finished and handle.cancel_on_disconnect:
                await handle.cancel()

    async def follow(self, batches: AsyncIterator[list[EventRow]]) -> AsyncIterator[Event]:
        async for rows in batches:
            for event in _events(rows):
                yield event
                if isinstance(event, Done):
                    return

    async def pages(self, fetch: Any, limit: int) -> AsyncIterator[Any]:
        cursor: str | None = None
        while True:
            page: Page[Any] = await fetch(limit, cursor)
            for item in page.data:
                yield item
            cursor = page.next_cursor
            if not cursor:
                return

    def view(self, agent: Agent) -> AgentView:
        reason = unusable_reason(agent, self.runner.provider_ctx)
        fields = msgspec.structs.asdict(agent)
        return AgentView(**fields, usable=reason is None, unusable_reason=reason)

    def checked(self, agent: Agent) -> Agent:
        return check(agent, self.runner.provider_ctx, self.settings.tools)


class AsyncLocalAgents:
    def __init__(self, client: AsyncLocalClient) -> None:
        self.client = client

    def list(self, *, page_size: int = 100) -> AsyncIterator[AgentView]:
        store, tenant = self.client.store, self.client.tenant

        async def fetch(limit: int, cursor: str | None) -> Page[AgentView]:
            page = await store.agents.page(tenant, limit, cursor)
            return Page([self.client.view(a) for a in page.data], page.next_cursor)

        return self.client.pages(fetch, page_size)

    async def get(self, agent: str) -> AgentView:
        return self.client.view(await self.client.store.agents.get(agent, self.client.tenant))

    async def create(self, name: str, provider: str, **fields: Any) -> AgentView:
        unknown = set(fields) - set(_AGENT_DEFAULTS)
        if unknown:
            raise InvalidRequest(f"unknown agent field {sorted(unknown)[0]!r}")
        stamp = now()
        given = {k: v for k, v in fields.items() if v is not None}
        values = {**_AGENT_DEFAULTS, **given, "id": new_ulid(), "name": name}
        values.update(provider=provider, created_at=stamp, updated_at=stamp)
        agent = _convert(values, Agent)
        made = await self.client.store.agents.create(self.client.checked(agent), self.client.tenant)
        return self.client.view(made)

    async def update(self, agent: str, **changes: Any) -> AgentView:
        unknown = set(changes) - set(_AGENT_DEFAULTS) - {"name", "provider"}
        if unknown:
            raise InvalidRequest(f"unknown agent field {sorted(unknown)[0]!r}")
        store, tenant = self.client.store, self.client.tenant
        found = await store.agents.get(agent, tenant)
        if changes.get("tools", ()) is None:
            changes["tools"] = []
        values = {**msgspec.structs.asdict(found), **changes, "updated_at": now()}
        updated = self.client.checked(_convert(values, Agent))
        return self.client.view(await store.agents.replace(updated, tenant))

    async def delete(self, agent: str) -> None:
        await self.client.store.agents.delete(agent, self.client.tenant)


def _convert(values: dict[str, Any], cls: type[T]) -> T:
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid fields: {exc}") from exc


class AsyncLocalSessions:
    def __init__(self, client: AsyncLocalClient) -> None:
        self.client = client

    def list(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[SessionRecord]:
        where = _convert({k: v for k, v in filters.items() if v is not None}, SessionFilter)
        store, tenant = self.client.store, self.client.tenant

        async def fetch(limit: int, cursor: str | None) -> Page[SessionRecord]:
            return await store.sessions.page(tenant, where, limit, cursor)

        return self.client.pages(fetch, page_size)

    async def get(self, session: str) -> SessionRecord:
        return await self.client.store.sessions.get(session, self.client.tenant)

    async def create(self, **fields: Any) -> SessionRecord:
        unknown = set(fields) - _SESSION_FIELDS
        if unknown:
            raise InvalidRequest(f"unknown session field {sorted(unknown)[0]!r}")
        store, tenant = self.client.store, self.client.tenant
        name = fields.get("name")
        if name is not None and fields.get("if_exists") == "resume":
            existing = await store.sessions.find_by_name(name, tenant)
            if existing is not None:
                return existing
        agent_id = fields.get("agent_id") or DEFAULT_AGENT_ID
        await store.agents.get(agent_id, tenant)
        record = new_session_record(
            agent_id,
            work_dir_within(fields.get("work_dir"), self.client.allow_roots),
            name=check_session_name(name),
            title=fields.get("title"),
            tags=fields.get("tags"),
            metadata=fields.get("metadata"),
            ttl_seconds=fields.get("ttl_seconds"),
        )
        created = await store.sessions.create(record, tenant)
        self.client.runner.session_created(tenant, created)
        return created

    async def update(self, session: str, **changes: Any) -> SessionRecord:
        unknown = set(changes) - (_SESSION_FIELDS - {"if_exists"})
        if unknown:
            raise InvalidRequest(f"unknown session field {sorted(unknown)[0]!r}")
        store = self.client.store
        record = await self.get(session)
        if "agent_id" in changes:
            await store.agents.get(changes["agent_id"], self.client.tenant)
        if "work_dir" in changes:
            changes["work_dir"] = work_dir_within(changes["work_dir"], self.client.allow_roots)
        if "name" in changes and changes["name"] != record.name:
            check_session_name(changes["name"])
        if not changes:
            return record
        return await store.sessions.update(record.id, changes, now())

    async def delete(self, session: str) -> None:
        record = await self.get(session)
        await self.client.runner.stop_session(record.id)
        await self.client.store.sessions.delete(record.id)

    async def archive(self, session: str) -> SessionRecord:
        record = await self.get(session)
        if record.archived_at is None:
            stamp = now()
            await self.client.store.sessions.set_archived(record.id, stamp, stamp)
        return await self.client.store.sessions.get(record.id, None)

    async def unarchive(self, session: str) -> SessionRecord:
        record = await self.get(session)
        if record.archived_at is not None:
            await self.client.store.sessions.set_archived(record.id, None, now())
        return await self.client.store.sessions.get(record.id, None)


class AsyncLocalMessages:
    def __init__(self, client: AsyncLocalClient) -> None:
        self.client = client

    async def list(
        self, session: str, *, after: int = 0, page_size: int = 100
    ) -> AsyncIterator[Message]:
        record = await self.client.sessions.get(session)
        while True:
            page = await self.client.store.messages.page(record.id, after, page_size)
            for message in page:
                yield message
            if len(page) < page_size:
                return
            after = page[-1].seq


class AsyncLocalRuns:
    def __init__(self, client: AsyncLocalClient) -> None:
        self.client = client

    async def start(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> RunStarted:
        request = _request(message, agent_id, if_busy, tools)
        handle = await self.client.runner.submit(self.client.tenant, session, request)
        if handle.starts_unusable():
            await _answer(handle)
        sid, rid = handle.session_id, handle.id
        url = f"/sessions/{sid}/runs/{rid}/events"
        return RunStarted(rid, sid, handle.status(), handle.queue_position(), url)

    async def get(self, session: str, run_id: str) -> Run:
        record = await self.client.sessions.get(session)
        stored = await self.client.store.runs.get(run_id, record.id)
        position = self.client.runner.queue_position(stored.run.id)
        return msgspec.structs.replace(stored.run, queue_position=position)

    def list(self, session: str, *, page_size: int = 100) -> AsyncIterator[Run]:
        async def listed() -> AsyncIterator[Run]:
            record = await self.client.sessions.get(session)

            async def fetch(limit: int, cursor: str | None) -> Page[Run]:
                return await self.client.store.runs.page(record.id, limit, cursor)

            async for run in self.client.pages(fetch, page_size):
                yield run

        return listed()

    async def cancel(self, session: str, run_id: str) -> Run:
        await self.client.runner.cancel_run(await self.get(session, run_id))
        return await self.get(session, run_id)

    async def tool_results(
        self, session: str, run_id: str, results: Sequence[ToolResultBlock]
    ) -> MessageResult:
        runner = self.client.runner
        return await _answer(await runner.resume(self.client.tenant, session, run_id, [*results]))

    async def events(self, session: str, run_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        run = await self.get(session, run_id)
        async for event in self.client.follow(self.client.runner.follow(run.id, after, PING_S)):
            yield event


class _Loop:
    """An event loop in a thread of its own, for the sync LocalClient."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(anext(source))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None and self.thread.is_alive():
                self.call(_closing(aclose()))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def _closing(closing: Coroutine[Any, Any, None]) -> None:
    await closing


class LocalClient:
    """`with LocalClient(db="data/sessiond.db") as client:` — the interface of `Client`,
    in-process (see AsyncLocalClient for the options)."""

    def __init__(self, db: str | os.PathLike[str], **options: Any) -> None:
        self.aio = AsyncLocalClient(db, **options)
        self._loop = _Loop()
        try:
            self._loop.call(self.aio.open())
        except BaseException:
            self._loop.stop()
            raise
        self.agents = LocalAgents(self)
        self.sessions = LocalSessions(self)
        self.messages = LocalMessages(self)
        self.runs = LocalRuns(self)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.thread.is_alive():
            self._loop.call(self.aio.aclose())
            self._loop.stop()

    def call(self, awaitable: Awaitable[T]) -> T:
        return self._loop.call(awaitable)

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        return self._loop.iterate(source)

    def send(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> MessageResult:
        return self.call(
            self.aio.send(session, message, agent_id=agent_id, if_busy=if_busy, tools=tools)
        )

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
        source = self.aio.stream(
            session,
            message,
            agent_id=agent_id,
            if_busy=if_busy,
            tools=tools,
            cancel_on_disconnect=cancel_on_disconnect,
        )
        return self.iterate(source)


class LocalAgents:
    def __init__(self, client: LocalClient) -> None:
        self.client, self.aio = client, client.aio.agents

    def list(self, *, page_size: int = 100) -> Iterator[AgentView]:
        return self.client.iterate(self.aio.list(page_size=page_size))

    def get(self, agent: str) -> AgentView:
        return self.client.call(self.aio.get(agent))

    def create(self, name: str, provider: str, **fields: Any) -> AgentView:
        return self.client.call(self.aio.create(name, provider, **fields))

    def update(self, agent: str, **changes: Any) -> AgentView:
        return self.client.call(self.aio.update(agent, **changes))

    def delete(self, agent: str) -> None:
        self.client.call(self.aio.delete(agent))


class LocalSessions:
    def __init__(self, client: LocalClient) -> None:
        self.client, self.aio = client, client.aio.sessions

    def list(self, *, page_size: int = 100, **filters: Any) -> Iterator[SessionRecord]:
        return self.client.iterate(self.aio.list(page_size=page_size, **filters))

    def get(self, session: str) -> SessionRecord:
        return self.client.call(self.aio.get(session))

    def create(self, **fields: Any) -> SessionRecord:
        return self.client.call(self.aio.create(**fields))

    def update(self, session: str, **changes: Any) -> SessionRecord:
        return self.client.call(self.aio.update(session, **changes))

    def delete(self, session: str) -> None:
        self.client.call(self.aio.delete(session))

    def archive(self, session: str) -> SessionRecord:
        return self.client.call(self.aio.archive(session))

    def unarchive(self, session: str) -> SessionRecord:
        return self.client.call(self.aio.unarchive(session))


class LocalMessages:
    def __init__(self, client: LocalClient) -> None:
        self.client, self.aio = client, client.aio.messages

    def list(self, session: str, *, after: int = 0, page_size: int = 100) -> Iterator[Message]:
        return self.client.iterate(self.aio.list(session, after=after, page_size=page_size))


class LocalRuns:
    def __init__(self, client: LocalClient) -> None:
        self.client, self.aio = client, client.aio.runs

    def start(
        self,
        session: str,
        message: str | list[ContentBlock],
        *,
        agent_id: str | None = None,
        if_busy: str | None = None,
        tools: list[ClientTool] | None = None,
    ) -> RunStarted:
        started = self.aio.start(session, message, agent_id=agent_id, if_busy=if_busy, tools=tools)
        return self.client.call(started)

    def get(self, session: str, run_id: str) -> Run:
        return self.client.call(self.aio.get(session, run_id))

    def list(self, session: str, *, page_size: int = 100) -> Iterator[Run]:
        return self.client.iterate(self.aio.list(session, page_size=page_size))

    def cancel(self, session: str, run_id: str) -> Run:
        return self.client.call(self.aio.cancel(session, run_id))

    def tool_results(
        self, session: str, run_id: str, results: Sequence[ToolResultBlock]
    ) -> MessageResult:
        return self.client.call(self.aio.tool_results(session, run_id, results))

    def events(self, session: str, run_id: str, *, after: int = 0) -> Iterator[Event]:
        return self.client.iterate(self.aio.events(session, run_id, after=after))
