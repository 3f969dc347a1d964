"""Several sessiond processes on one PostgreSQL database: leases, word between processes,
and jobs done once.

- A session's lease is a session-level advisory lock, held on this process's own connection
  while the process has a run of the session in hand (running, or queued behind one): two
  processes never run one session at once. The lock is the connection's, so a process that
  dies loses its leases as soon as PostgreSQL sees the connection go (at once for a killed
  process; within `lease_timeout_s` for a host that vanishes, by the TCP keepalives the
  connection asks the server for).
- The writer announces each commit's events on the channel `sessiond_events`: the process's
  id, then `run_id:last_seq` for each run, in payloads under PostgreSQL's 8000-byte limit. The
  events themselves are read from the table. A cancel for a run another process is running
  goes on `sessiond_cancel`, a lease given back on `sessiond_free`. A process hears its own
  announcements too and drops them by the id.
- A queued run waiting for its ticket's turn (tickets.py) is marked alive by an advisory lock
  on its id, held while its process waits to serve it: a scan that finds the lock free knows
  the process is gone, and interrupts the run.
- A periodic job (the TTL sweep, the scan for runs of dead processes) takes an advisory lock
  of its own, tried and never waited for: one process does it each time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from server.errors import StoreError

log = logging.getLogger("sessiond.store")

EVENTS, CANCELS, FREED = "sessiond_events", "sessiond_cancel", "sessiond_free"
_SESSIONS, _JOBS, _TICKETS = 0x5E55, 0x10B5, 0x71C7  # advisory locks' first keys
PAYLOAD_MAX = 7900


def announcements(me: str, last: dict[str, int]) -> list[str]:
    """The payloads that announce runs' last committed seqs."""
    payloads: list[str] = []
    current = me
    for run_id, seq in last.items():
        item = f" {run_id}:{seq}"
        if len(current) + len(item) > PAYLOAD_MAX:
            payloads.append(current)
            current = me
        current += item
    if current != me:
        payloads.append(current)
    return payloads


class PgCluster:
    shared = True

    def __init__(self, url: str, me: str, lease_timeout_s: float) -> None:
        self.url = url
        self.me = me
        self.lease_timeout_s = lease_timeout_s
        self._conn: asyncpg.Connection | None = None
        self._mutex = asyncio.Lock()
        self._held: set[str] = set()
        self._tickets: set[str] = set()  # queued runs this process waits to serve

    async def start(
        self,
        on_events: Callable[[list[tuple[str, int]]], None],
        on_cancel: Callable[[str, str], None],
        on_free: Callable[[str], None],
    ) -> None:
        idle = max(1, int(self.lease_timeout_s / 3))
        keepalive = {
            "tcp_keepalives_idle": str(idle),
            "tcp_keepalives_interval": "1",
            "tcp_keepalives_count": str(max(1, int(self.lease_timeout_s - idle))),
        }
        try:
            self._conn = conn = await asyncpg.connect(self.url, server_settings=keepalive)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to the database: {exc}") from exc

        def events(_: Any, __: int, ___: str, payload: str) -> None:
            sender, _, items = payload.partition(" ")
            if sender == self.me or not items:
                return
            found = []
            for item in items.split(" "):
                run_id, _, seq = item.partition(":")
                found.append((run_id, int(seq)))
            on_events(found)

        def cancels(_: Any, __: int, ___: str, payload: str) -> None:
            run_id, _, status = payload.partition(" ")
            on_cancel(run_id, status or "cancelled")

        def freed(_: Any, __: int, ___: str, payload: str) -> None:
            sender, _, session_id = payload.partition(" ")
            if sender != self.me:
                on_free(session_id)

        await conn.add_listener(EVENTS, events)
        await conn.add_listener(CANCELS, cancels)
        await conn.add_listener(FREED, freed)

    def holds(self, session_id: str) -> bool:
        return session_id in self._held

    async def hold(self, session_id: str) -> bool:
        if session_id in self._held:
            return True
        async with self._mutex:
            if session_id in self._held:
                return True
            got = await self._ask(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", _SESSIONS, session_id
            )
            if got:
                self._held.add(session_id)
            return bool(got)

    async def let_go(self, session_id: str, unless: Callable[[], bool]) -> None:
        async with self._mutex:
            if session_id not in self._held or unless():
                return
            self._held.discard(session_id)
            await self._ask(  # one round trip: the lock given back, and word of it
                "SELECT pg_advisory_unlock($1, hashtext($2)), pg_notify($3, $4)",
                _SESSIONS,
                session_id,
                FREED,
                f"{self.me} {session_id}",
            )

    async def cancel_elsewhere(self, run_id: str, status: str) -> None:
        async with self._mutex:
            await self._ask("SELECT pg_notify($1, $2)", CANCELS, f"{run_id} {status}")

    async def hold_ticket(self, run_id: str) -> None:
        async with self._mutex:
            await self._ask("SELECT pg_advisory_lock($1, hashtext($2))", _TICKETS, run_id)
            self._tickets.add(run_id)

    async def let_ticket_go(self, run_id: str) -> None:
        async with self._mutex:
            if run_id in self._tickets:
                self._tickets.discard(run_id)
                await self._ask("SELECT pg_advisory_unlock($1, hashtext($2))", _TICKETS, run_id)

    async def ticket_served(self, run_id: str) -> bool:
        if run_id in self._tickets:
            return True
        async with self._mutex:
            got = await self._ask(
                "SELECT pg_try_advisory_lock($1, hashtext($2)) "
                "AND pg_advisory_unlock($1, hashtext($2))",
                _TICKETS,
                run_id,
            )
            return not got

    async def queue_moved(self, session_id: str) -> None:
        async with self._mutex:
            await self._ask("SELECT pg_notify($1, $2)", FREED, f"{self.me} {session_id}")

    async def take_job(self, job: str) -> bool:
        async with self._mutex:
            return bool(
                await self._ask("SELECT pg_try_advisory_lock($1, hashtext($2))", _JOBS, job)
            )

    async def end_job(self, job: str) -> None:
        async with self._mutex:
            await self._ask("SELECT pg_advisory_unlock($1, hashtext($2))", _JOBS, job)

    async def _ask(self, sql: str, *args: Any) -> Any:
        if self._conn is None:
            raise StoreError("the cluster connection is not open")
        try:
            return await self._conn.fetchval(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"database lease query failed: {exc}") from exc

    async def close(self) -> None:
        """Every lease goes with the connection."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._held.clear()
            self._tickets.clear()
            await conn.close()
