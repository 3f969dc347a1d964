"""Admission: a message becomes a run. Checked against its session (archived? a run paused
for client tools to close?) and its agent's tools; one run at a time per session (reject,
queue or interrupt); an idempotency key returns the run it first started; and a run's start,
its user message with it, is committed before the run goes on.

Short turns come back to back, so admission keeps the session record it last read for each
key (`Records`) and starts the next run from it without reading: the start operation then
checks, in its own transaction, that the session is still as the record says
(`runs.NewRun.expected`). A record gone stale, or anything refused on the way that a stale
record could explain, costs one read and a second try; never a run started against a
changed session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

import msgspec

from server.errors import ApiError, Archived, Conflict, SessionBusy, StoreError, Unprocessable
from server.ids import new_ulid, now
from server.models import Agent, ClientTool, ContentBlock, Run, RunStatus, SessionRecord
from server.runs import agentspec
from server.runs.active import ActiveRun, RunRequest
from server.runs.driver import Driver
from server.runs.pauses import Pauses
from server.runs.peers import PASSING_S, Peers, TicketCancelled
from server.runs.table import LiveRuns
from server.store import Begun, NewRun, Stale, Store
from server.tools.base import ToolSettings

KEY_WAITS, KEY_WAIT_S = 40, 0.05  # a repeated key's run, started by another process


class Admission:
    def __init__(
        self,
        store: Store,
        table: LiveRuns,
        driver: Driver,
        pauses: Pauses,
        tools: ToolSettings,
        *,
        peers: Peers,
    ) -> None:
        self.peers = peers
        self.store = store
        self.table = table
        self.driver = driver
        self.pauses = pauses  # a new message closes a run its session has paused
        self.tools = tools
        self.records = Records()  # sessions as last read, by the key they were asked for
        self.keys: dict[str, str] = {}  # idempotency keys of runs being started

    async def submit(
        self,
        tenant: str,
        session_key: str,
        request: RunRequest,
        idempotency_key: str | None = None,
    ) -> ActiveRun | Run:
        """`session_key` (an id or a name) is looked up among the tenant's sessions; an
        idempotency key is the tenant's own (stored as `<tenant>:<key>`)."""
        self.table.check_open()
        scoped = f"{tenant}:{idempotency_key}" if idempotency_key else None
        known = self.records.get((tenant, session_key))
        if known is not None and not known.archived_at and known.status != "requires_action":
            try:
                return await self._submit(tenant, known, request, scoped, expected=known)
            except (Stale, ApiError):
                self.records.forget((tenant, session_key))
        record = await self.store.sessions.get(session_key, tenant)
        self.records.keep((tenant, session_key), record)
        return await self._submit(tenant, record, request, scoped)

    async def _submit(
        self,
        tenant: str,
        record: SessionRecord,
        request: RunRequest,
        idempotency_key: str | None,
        expected: SessionRecord | None = None,
    ) -> ActiveRun | Run:
        if record.archived_at:
            raise Archived(f"session {record.id} is archived; unarchive it to send messages")
        if idempotency_key:
            earlier = await self._earlier(idempotency_key, record.id, request)
            if earlier is not None:
                return earlier
        agent = await self.store.agents.get(request.agent_id or record.agent_id, tenant)
        agent = agentspec.offered(agent, self.tools)
        agent = agentspec.for_request(agent, request.system, request.max_tokens)
        names = [t.name if isinstance(t, ClientTool) else t for t in agent.tools]
        agentspec.check_tools(request.tools, names)
        if record.status == "requires_action" and self.table.running(record.id) is None:
            paused = await self.store.runs.paused(record.id)
            if paused is not None and self.table.get(paused.run.id) is None:
                await self.pauses.close(paused, "cancelled")
        if self.peers.shared and request.if_busy == "queue":
            try:
                return await self._queue_in_turn(record, agent, request, idempotency_key, expected)
            finally:
                self.peers.release(record.id)  # (kept if the run holds the session now)
        if self.peers.shared and self.table.idle(record.id) and not self.peers.holds(record.id):
            earlier = await self._lease(record.id, request, idempotency_key)
            if earlier is not None:
                return earlier
        try:
            return await self._open(record, agent, request, idempotency_key, expected)
        except StoreError:
            if idempotency_key is None:
                raise
            # another process started a run with this key meanwhile (the key is unique)
            earlier = await self._earlier(idempotency_key, record.id, request)
            if earlier is None:
                raise
            return earlier
        finally:
            self.peers.release(record.id)  # nothing in hand after all: the lease goes

    async def _lease(
        self, sid: str, request: RunRequest, key: str | None
    ) -> ActiveRun | Run | None:
        """Take the session's lease from the other processes on the database, by the busy
        policy while one of them holds it; the run a repeated key started over there."""
        if await self.peers.acquire(sid):
            return None
        if key is not None:  # the same key sent to the other process a moment ago?
            for _ in range(KEY_WAITS):
                earlier = await self._earlier(key, sid, request)
                if earlier is not None:
                    return earlier
                if await self.peers.acquire(sid):
                    return None
                await asyncio.sleep(KEY_WAIT_S)
        if request.if_busy == "reject":
            held = await self.store.runs.page(sid, 1, None)
            if not held.data or held.data[0].status not in ("running", "queued"):
                # nothing runs: the lease is passing (a scan having a look, a process letting
                # go as its run ends), and a moment is all it takes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.peers.wait_free(sid), PASSING_S)
                    return None
            run_id = held.data[0].id if held.data else ""
            raise SessionBusy(
                f"session {sid} is busy with run {run_id} on another process; retry later, "
                'or send "if_busy": "queue" or "interrupt"',
                run_id=run_id,
            )
        if request.if_busy == "interrupt":
            for run in (await self.store.runs.page(sid, 10, None)).data:
                if run.status in ("running", "queued"):
                    await self.peers.cancel_elsewhere(run.id, "interrupted")
        await self.peers.wait_free(sid)
        return None

    async def _queue_in_turn(
        self,
        record: SessionRecord,
        agent: Agent,
        request: RunRequest,
        key: str | None,
        expected: SessionRecord | None,
    ) -> ActiveRun:
        """`if_busy: queue` on a shared database: the run is stored queued with the session's
        next ticket as it arrives, waits for its ticket's turn across every process
        (peers.wait_turn), then joins this process's queue, alone, and starts as a queued run
        does (its message enters the history as it begins)."""
        sid = record.id
        if key is not None and key in self.keys:
            raise Conflict("a run with this Idempotency-Key is being started; retry")
        run = Run(new_ulid(), sid, agent.id, "queued", now())
        active = ActiveRun(run, request, agent, self.driver.new_log(run.id, sid, 1))
        new = _new_run(run, request, key, expected)
        await self.peers.serving(run.id)
        try:
            if key:
                self.keys[key] = run.id
            try:
                await self.store.tickets.take(new)
            finally:
                if key:
                    self.keys.pop(key, None)
            try:
                await self.peers.wait_turn(run.id, sid)
            except (TicketCancelled, asyncio.CancelledError) as exc:
                await asyncio.shield(self._cancel_waiting(active))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return active
            except BaseException:
                await asyncio.shield(self._cancel_waiting(active, "interrupted"))
                raise
        finally:
            await asyncio.shield(self.peers.served(run.id))
        self.table.admit(active)  # queued, and the session free here: next in its queue
        self.driver.start_next(sid)
        return active

    async def _cancel_waiting(self, active: ActiveRun, status: str = "cancelled") -> None:
        """A ticketed run that never started: its end stored, the queue moved on."""
        self.table.admit(active)
        try:
            await self.driver.cancel(active, status)
        finally:
            await self.peers.queue_moved(active.session_id)

    async def _earlier(
        self, key: str, session_id: str, request: RunRequest
    ) -> ActiveRun | Run | None:
        """The run this key started, if any; the key on another session is a conflict, with
        another request (message, options, tools) unprocessable."""
        run_id = self.keys.get(key)
        live = self.table.get(run_id) if run_id is not None else None
        if live is not None:
            found: ActiveRun | Run = live
            first: RunRequest | None = live.request
        else:
            stored = await self.store.runs.by_idempotency_key(key)
            if stored is None:
                return None
            found = self.table.get(stored.run.id) or stored.run
            first = _request_of(stored.input, stored.options)
        owner = found.session_id
        if owner != session_id:
            raise Conflict("this Idempotency-Key was already used for another session")
        if first != request:
            raise Unprocessable(
                f"Idempotency-Key {key.partition(':')[2]!r} was already used with another "
                "request body; send a new key for a new message",
                field="Idempotency-Key",
            )
        return found

    async def _open(
        self,
        record: SessionRecord,
        agent: Agent,
        request: RunRequest,
        key: str | None,
        expected: SessionRecord | None,
    ) -> ActiveRun:
        sid = record.id
        busy, blocker = self.table.running(sid), self.table.blocker(sid)
        self._check_free(sid, blocker, request, key)
        created = now()
        status: RunStatus = "queued" if blocker is not None else "running"
        started = created if status == "running" else None
        run = Run(new_ulid(), sid, agent.id, status, created, started_at=started)
        active = ActiveRun(run, request, agent, self.driver.new_log(run.id, sid, 1))
        self.table.admit(active)
        if key:
            self.keys[key] = active.id
        new = _new_run(run, request, key, expected)
        written = self.store.runs.start(new)
        if status == "running":  # its task waits for the same commit: no turn of the loop lost
            active.record = record
            active.task = asyncio.create_task(self._start(active, written), name=f"run-{run.id}")
        try:
            await written
        except BaseException:
            self.table.drop(active)
            self.driver.start_next(sid)  # a run queued behind this one meanwhile goes first
            raise
        finally:
            if key:
                self.keys.pop(key, None)
        if status == "queued" and request.if_busy == "interrupt" and busy is not None:
            await self.driver.cancel(busy, "interrupted")
        return active

    def _check_free(
        self, sid: str, blocker: ActiveRun | None, request: RunRequest, key: str | None
    ) -> None:
        if blocker is not None and request.if_busy == "reject":
            raise SessionBusy(
                f"session {sid} is busy with run {blocker.id}; retry later, or send "
                '"if_busy": "queue" or "interrupt"',
                run_id=blocker.id,
            )
        if key is not None and key in self.keys:
            raise Conflict("a run with this Idempotency-Key is being started; retry")

    async def _start(self, active: ActiveRun, written: asyncio.Future[Begun | None]) -> None:
        """Drive the run once its start is committed. A start that failed is for `_open` to
        report: nothing was stored, and whoever waits on the run may go."""
        try:
            active.begun = await written
        except BaseException:
            active.done.set()
            return
        assert active.begun is not None  # a running run's start stores its message
        active.messages.append(active.begun.message)
        await self.driver.drive(active)


class Records:
    """The session record last read for each key (a tenant, and an id or a name in it),
    least recently used first out."""

    def __init__(self, max_records: int = 4096) -> None:
        self.max_records = max_records
        self._kept: OrderedDict[tuple[str, str], SessionRecord] = OrderedDict()

    def get(self, key: tuple[str, str]) -> SessionRecord | None:
        record = self._kept.get(key)
        if record is not None:
            self._kept.move_to_end(key)
        return record

    def keep(self, key: tuple[str, str], record: SessionRecord) -> None:
        self._kept[key] = record
        self._kept.move_to_end(key)
        if len(self._kept) > self.max_records:
            self._kept.popitem(last=False)

    def forget(self, key: tuple[str, str]) -> None:
        self._kept.pop(key, None)

    def forget_session(self, session_id: str) -> None:
        """Every key that led to the session (its id, its name)."""
        for key in [k for k, record in self._kept.items() if record.id == session_id]:
            del self._kept[key]


def _request_of(content: list[ContentBlock], options: dict[str, Any]) -> RunRequest | None:
    """The request a stored run was started for (None: options this server cannot read)."""
    try:
        return msgspec.convert({**options, "content": content}, RunRequest)
    except msgspec.ValidationError:
        return None


def _new_run(
    run: Run, request: RunRequest, key: str | None, expected: SessionRecord | None
) -> NewRun:
    """What the store keeps of a run as it is admitted."""
    return NewRun(
        id=run.id,
        session_id=run.session_id,
        agent_id=run.agent_id,
        status=run.status,
        input=request.content,
        options=_options(request),
        idempotency_key=key,
        created_at=run.created_at,
        expected=expected,
    )


def _options(request: RunRequest) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(msgspec.structs.replace(request, content=[]))
    result.pop("content", None)
    return result
