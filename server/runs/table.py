"""The table of live runs: every run the server is working on or has queued, which one holds
each session, and each session's queue. One run at a time per session is this table's rule;
nothing else reads or writes it.

A run enters at admission (running, or queued behind the session's run), leaves its session
when it ends (`release`, so that the next may start while its end is still being written) and
leaves the table once that end is stored (`drop`).
"""

from __future__ import annotations

from collections import deque

from server.errors import Conflict, ShuttingDown
from server.runs.active import ActiveRun


class LiveRuns:
    def __init__(self) -> None:
        self._runs: dict[str, ActiveRun] = {}
        self._running: dict[str, ActiveRun] = {}  # session id → the run that holds it
        self._queues: dict[str, deque[ActiveRun]] = {}  # made only when a run waits
        self.open = True

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        """Runs running or queued."""
        return len(self._runs)

    def get(self, run_id: str) -> ActiveRun | None:
        return self._runs.get(run_id)

    def running(self, session_id: str) -> ActiveRun | None:
        return self._running.get(session_id)

    def blocker(self, session_id: str) -> ActiveRun | None:
        """What a new run of the session would wait for: its running run, else the first
        queued one."""
        queue = self._queues.get(session_id)
        return self._running.get(session_id) or (queue[0] if queue else None)

    def idle(self, session_id: str) -> bool:
        return session_id not in self._running and session_id not in self._queues

    def queue_position(self, run_id: str) -> int | None:
        """1 for the next to run; None for a run that is not waiting in a queue."""
        active = self._runs.get(run_id)
        if active is None or active.run.status != "queued":
            return None
        queue = self._queues.get(active.session_id, deque())
        return list(queue).index(active) + 1 if active in queue else None

    def of_session(self, session_id: str) -> list[ActiveRun]:
        return [a for a in self._runs.values() if a.session_id == session_id]

    def queued(self) -> list[ActiveRun]:
        return [active for queue in self._queues.values() for active in queue]

    def all(self) -> list[ActiveRun]:
        return list(self._runs.values())

    # -- changing -------------------------------------------------------------------------
    def check_open(self) -> None:
        if not self.open:
            raise ShuttingDown("the server is shutting down; retry shortly")

    def close(self) -> None:
        """No run starts from now on, queued or new."""
        self.open = False

    def admit(self, active: ActiveRun) -> None:
        """A new run: it holds its session if it is running, else it joins the session's
        queue (at the front if it came to interrupt the running one)."""
        self._runs[active.id] = active
        if active.run.status == "running":
            self._running[active.session_id] = active
        elif active.request.if_busy == "interrupt":
            self._queues.setdefault(active.session_id, deque()).appendleft(active)
        else:
            self._queues.setdefault(active.session_id, deque()).append(active)

    def claim(self, active: ActiveRun) -> None:
        """A paused run goes on: it holds its session again, if nothing else does."""
        if not self.idle(active.session_id) or active.id in self._runs:
            raise Conflict(f"run {active.id} is already being resumed")
        self._running[active.session_id] = active
        self._runs[active.id] = active

    def add_unattached(self, active: ActiveRun) -> None:
        """A run that holds no session (one with no persistence): live, never queued."""
        self._runs[active.id] = active

    def release(self, active: ActiveRun) -> None:
        """The run no longer holds its session, nor its place in the session's queue."""
        sid = active.session_id
        if self._running.get(sid) is active:
            del self._running[sid]
        queue = self._queues.get(sid)
        if queue is not None and active in queue:
            queue.remove(active)
        if queue is not None and not queue:
            del self._queues[sid]

    def drop(self, active: ActiveRun) -> None:
        """The run is over and stored: readers find it in the database from now on."""
        self.release(active)
        self._runs.pop(active.id, None)

    def next_in_queue(self, session_id: str) -> ActiveRun | None:
        """The session's next queued run, now holding the session; None if the session is
        held, nothing waits, or the table is closed."""
        queue = self._queues.get(session_id)
        if not queue or session_id in self._running or not self.open:
            return None
        nxt = queue.popleft()
        if not queue:
            del self._queues[session_id]
        self._running[session_id] = nxt
        return nxt
