"""What the HTTP edge holds of a run it started, resumed or found by its idempotency key: a
narrow handle (wait for the outcome, follow its events, cancel it, ask its status), never
the runner's insides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from server.events import EventRow
from server.models import Message, Run, ToolResultBlock
from server.runs.active import ActiveRun
from server.store import Store


class Outcome(msgspec.Struct):
    """A finished (or paused) run with the messages it stored; for a run paused for client
    tools, `held` are the results of the server tools its last step ran."""

    run: Run
    messages: list[Message]
    held: list[ToolResultBlock]


class Owner(Protocol):
    """What a handle asks of the runner that made it."""

    store: Store

    def queue_position(self, run_id: str) -> int | None: ...
    def is_live(self, run_id: str) -> bool: ...
    def starts_unusable(self, active: ActiveRun) -> bool: ...
    def follow(
        self, run_id: str, after: int, ping_s: float, known: ActiveRun | None = None
    ) -> AsyncIterator[list[EventRow]]: ...
    async def cancel(self, active: ActiveRun, status: str = "cancelled") -> None: ...


class RunHandle:
    def __init__(self, owner: Owner, active: ActiveRun | None, stored: Run | None = None) -> None:
        assert (active is None) != (stored is None)
        self._owner = owner
        self._active = active
        self._stored = stored
        run = active.run if active is not None else stored
        assert run is not None
        self.id = run.id
        self.session_id = run.session_id
        # a resumed run's new events come after these (a client following it from here sees
        # only what the resume adds)
        self.resumed_after = active.log.base if active is not None else 0

    @property
    def cancel_on_disconnect(self) -> bool:
        return self._active is not None and self._active.request.cancel_on_disconnect

    def queue_position(self) -> int | None:
        return self._owner.queue_position(self.id)

    def status(self) -> str:
        """The run's status now: a queued run that has been promoted reads as running."""
        active = self._active
        if active is None:
            assert self._stored is not None
            return self._stored.status
        if active.done.is_set() or self.queue_position() is not None:
            return active.run.status
        return "running"

    def starts_unusable(self) -> bool:
        """The run starts now with an agent that cannot run here: it fails before asking any
        upstream. A queued run fails when its turn comes, in its events."""
        active = self._active
        if active is None or self.queue_position() is not None:
            return False
        return self._owner.starts_unusable(active)

    async def outcome(self) -> Outcome:
        """Wait for the run to end (or pause), then what it did."""
        store = self._owner.store
        if self._active is not None:
            await self._active.done.wait()
            run, messages = self._active.run, self._active.messages
            persisted = self._active.scratch is None
        else:
            assert self._stored is not None
            run, persisted = self._stored, True
            messages = await store.messages.of_run(run.id)
        held: list[ToolResultBlock] = []
        if run.status == "requires_action" and persisted:
            held = (await store.runs.get(run.id)).held  # they wait until the client's come
        return Outcome(run, messages, held)

    def follow(self, after: int, ping_s: float) -> AsyncIterator[list[EventRow]]:
        known = self._active if self._active is not None and self._active.scratch else None
        return self._owner.follow(self.id, after, ping_s, known)

    async def cancel(self) -> None:
        if self._active is not None:
            await self._owner.cancel(self._active)
