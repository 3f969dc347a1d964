"""The store's contract: every read and write the rest of sessiond makes, and the values they
take and give. Nothing outside `store/` sees a connection, a cursor or SQL; a second database
implements these Protocols and nothing above `store/` changes.

Two kinds of write:
- `async` methods commit before they return.
- Methods that return an `asyncio.Future` queue their write at once: its place in the commit
  order is fixed when the call returns, and the future settles when it is committed. A run
  queues its start and its first step's wait on the same commit this way, and a cancelled run
  still knows when a write it queued is durable (`Store.flush`).

Every write of a moment of a run's life (start, begin, step, finish, resume, close) is one
transaction: a crash leaves either all of it or none.

Tenants: agents and sessions belong to one; runs, messages and events to their session's.
Every method that finds an agent or a session by what a client sent, lists them or makes them
takes the tenant it acts for, and another tenant's rows are to it as if they did not exist.
`None` is for the server's own callers (the runner, the sweeper, recovery), which hold ids
already checked: any tenant. The built-in agent is the default tenant's and visible to all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import msgspec

from server.events import EventRow
from server.models import (
    Agent,
    ApiKey,
    ContentBlock,
    ErrorInfo,
    Message,
    Outgoing,
    Page,
    PendingToolCall,
    Role,
    Run,
    SessionRecord,
    ToolCallRecord,
    ToolResultBlock,
    Usage,
    WebhookAttempt,
    WebhookDelivery,
)

DEFAULT_AGENT_ID = "default"  # the built-in agent, present in every store

# -- values -------------------------------------------------------------------------------


class SessionFilter(msgspec.Struct):
    status: str | None = None
    tags: list[str] = []
    agent_id: str | None = None
    work_dir: str | None = None
    name: str | None = None
    order: str = "updated_at"
    include_archived: bool = False  # with no status: archived sessions too


class NewRun(msgspec.Struct):
    id: str
    session_id: str
    agent_id: str
    status: str  # running | queued
    input: list[ContentBlock]
    options: dict[str, Any]
    idempotency_key: str | None
    created_at: str
    # The session as the caller last read it: the run starts only if the session is still
    # unarchived, not paused, with the same agent, work_dir and name, else `Stale`.
    expected: SessionRecord | None = None


class Stale(Exception):
    """The session is no longer as the caller read it; nothing was written."""


class StoredRun(msgspec.Struct):
    """A run with what it takes to start or resume it."""

    run: Run
    input: list[ContentBlock]
    options: dict[str, Any]
    held: list[ToolResultBlock]  # server tool results of a step paused for client tools
    run_seconds: float = 0.0  # of its deadline used so far (paused time is not)


class Begun(NamedTuple):
    message: Message  # the run's user message, as stored
    message_count: int  # the session's, with it


class Step(msgspec.Struct):
    """A completed step. A step paused for client tools keeps its server tools' results in
    `held` until the rest come."""

    entries: list[tuple[Role, list[ContentBlock]]]
    usage: Usage
    tool_calls: list[ToolCallRecord]
    now: str
    held: list[ToolResultBlock] | None = None
    counted: list[int | None] = []  # the provider's token count of each entry (None: estimate)


class Finish(msgspec.Struct):
    status: str
    stop_reason: str | None
    error: ErrorInfo | None
    usage: Usage  # not yet recorded: added to the run's and the session's
    pending: list[PendingToolCall]
    session_status: str | None  # None: leave the session's status alone
    run_seconds: float | None = None  # the time driven so far (None: leave it)


class Snippet(msgspec.Struct):
    """A piece of a matching message; `highlights` are [start, end) offsets into `text`."""

    message_id: str
    seq: int
    role: str
    text: str
    highlights: list[tuple[int, int]]


class SearchResult(msgspec.Struct):
    session: SessionRecord
    snippets: list[Snippet]
    score: float  # higher is better


Restorable = tuple[SessionRecord, list[Message], list[Run]]  # an imported session, whole


class EventBatch:
    """Event-log rows waiting for one commit. A run keeps the batches its rows joined until
    they are `committed`, then serves those rows from the database instead of memory."""

    __slots__ = ("committed", "rows")

    def __init__(self) -> None:
        self.rows: list[EventRow] = []
        self.committed = False


# -- the interface ------------------------------------------------------------------------


class AgentStore(Protocol):
    async def get(self, agent_id: str, tenant: str | None) -> Agent: ...  # NotFound
    async def find_by_name(self, name: str, tenant: str) -> Agent | None: ...
    async def page(self, tenant: str, limit: int, cursor: str | None) -> Page[Agent]: ...
    # webhook_secret: sealed; a replace with None keeps the secret while the URL stays
    async def create(
        self, agent: Agent, tenant: str, webhook_secret: str | None = None
    ) -> Agent: ...  # Conflict: name taken
    async def replace(
        self, agent: Agent, tenant: str, webhook_secret: str | None = None
    ) -> Agent: ...  # NotFound
    async def delete(self, agent_id: str, tenant: str) -> None: ...  # Conflict while in use
    async def ensure_default(self, agent: Agent) -> Agent: ...


class SessionStore(Protocol):
    # The methods that take a session's id and no tenant are for ids `get` has checked.
    async def get(self, key: str, tenant: str | None) -> SessionRecord: ...  # id or name
    async def find_by_name(self, name: str, tenant: str) -> SessionRecord | None: ...
    async def create(
        self, rec: SessionRecord, tenant: str, webhook_secret: str | None = None
    ) -> SessionRecord: ...
    async def update(self, session_id: str, changes: dict[str, Any], now: str) -> SessionRecord: ...
    async def set_archived(self, session_id: str, archived_at: str | None, now: str) -> None: ...
    async def fork(
        self, source_id: str, at_message_id: str | None, rec: SessionRecord, tenant: str
    ) -> None: ...
    async def delete(self, session_id: str) -> None: ...  # with its messages, runs, events
    async def delete_expired(self, session_id: str, now: str) -> bool: ...  # still expired, idle
    async def page(
        self, tenant: str, where: SessionFilter, limit: int, cursor: str | None
    ) -> Page[SessionRecord]: ...
    async def expired(self, now: str, limit: int = 100) -> list[str]: ...
    async def idle_orphans(self) -> None: ...  # `running` with no running run: back to idle


class MessageStore(Protocol):
    async def page(self, session_id: str, after: int, limit: int) -> list[Message]: ...
    async def history(self, session_id: str) -> list[Message]: ...
    async def of_run(self, run_id: str) -> list[Message]: ...
    async def since_compaction(self, session_id: str) -> list[Message]:
        """The latest compaction entry and the messages after what it summarises (none: the
        whole history)."""
        ...

    def add_compaction(self, entry: Message) -> asyncio.Future[tuple[Message, int]]:
        """Store a compaction entry as the session's next message (its seq is set there);
        also the session's message count with it."""
        ...


class RunStore(Protocol):
    async def get(self, run_id: str, session_id: str | None = None) -> StoredRun: ...
    async def by_idempotency_key(self, key: str) -> StoredRun | None: ...
    async def page(self, session_id: str, limit: int, cursor: str | None) -> Page[Run]: ...
    async def of_session(self, session_id: str) -> list[Run]: ...  # oldest first
    async def paused(self, session_id: str) -> StoredRun | None: ...
    async def unfinished(self) -> list[StoredRun]: ...  # queued, running, requires_action
    async def ids_from(self, session_id: str, run_id: str) -> list[str]: ...
    def start(self, new: NewRun) -> asyncio.Future[Begun | None]:
        """Open a run; a running one also stores its user message and marks the session
        busy (None for a queued one). `Stale` if `new.expected` no longer holds."""
        ...

    def begin(
        self, run_id: str, session_id: str, content: list[ContentBlock], now: str
    ) -> asyncio.Future[Begun]:
        """A queued run's turn: it runs, and its message enters the history."""
        ...

    def add_usage(self, run_id: str, session_id: str, usage: Usage) -> asyncio.Future[None]:
        """Add a step's usage as it starts, with the next commit rather than one of its own;
        `Store.withdraw` takes it back while it waits."""
        ...

    def add_step(self, run_id: str, session_id: str, step: Step) -> asyncio.Future[list[Message]]:
        """A completed step: its messages (numbered on), counters and usage."""
        ...

    def finish(
        self, run_id: str, session_id: str, end: Finish, now: str, step: Step | None = None
    ) -> asyncio.Future[list[Message]]:
        """The run's end; with `step`, its last step too, in the same transaction."""
        ...

    def resume(
        self, run_id: str, session_id: str, results: list[ContentBlock], now: str
    ) -> asyncio.Future[Message]:
        """A paused run gets its tool results: stored as the next user turn; it runs again."""
        ...

    def close(
        self, run_id: str, session_id: str, results: list[ContentBlock], end: Finish, now: str
    ) -> asyncio.Future[None]:
        """End a run that is not running (paused, or left by a dead process): `results`
        (if any) first answer its dangling tool calls as a user turn, then its end."""
        ...


class EventStore(Protocol):
    def append(self, rows: Iterable[EventRow]) -> EventBatch:
        """Buffer rows for the next commit (no await); the batch says when it happened."""
        ...

    async def read(self, run_id: str, after: int, limit: int) -> list[EventRow]: ...
    async def last_seq(self, run_id: str) -> int: ...  # 0: none


class SearchStore(Protocol):
    async def page(
        self, tenant: str, q: str, limit: int, cursor: str | None
    ) -> Page[SearchResult]: ...


class TransferStore(Protocol):
    async def restore(
        self, tenant: str, items: list[Restorable], agents: list[Agent] | None = None
    ) -> None:
        """Store imported sessions whole, and first the agents they need that are missing: all
        in one transaction."""
        ...


class KeyStore(Protocol):
    async def create(self, key: ApiKey, digest: str) -> ApiKey: ...  # digest: of the key
    # tenant None: every tenant's (the CLI's view); a tenant sees its own keys only
    async def page(self, tenant: str | None, limit: int, cursor: str | None) -> Page[ApiKey]: ...
    async def by_digest(self, digest: str) -> ApiKey | None: ...  # None: unknown or revoked
    async def made(self) -> int: ...  # keys ever made, revoked ones too
    async def revoke(self, key_id: str, now: str, tenant: str | None) -> ApiKey: ...  # NotFound
    def used(self, key_id: str, now: str) -> None:
        """Note a key's last use, with the next commit (no await)."""
        ...


class SecretStore(Protocol):
    """Secrets of the server's own, by name, sealed by the caller before they get here."""

    async def get(self, name: str) -> str | None: ...
    async def keep(self, name: str, value: str, now: str) -> str: ...  # the first one stays
    async def replace(self, name: str, value: str, now: str) -> None: ...


class WebhookStore(Protocol):
    """The outbox of run-end webhooks: a row is written with the run's end (`RunStore.finish`,
    `close`), when the session or its run's agent has a webhook URL."""

    def written(self) -> int: ...  # outbox rows this process has written: moves with each
    async def due(self, now_unix: float, limit: int) -> list[Outgoing]: ...  # oldest due first
    async def next_due(self) -> float | None: ...  # unix time of the earliest pending
    async def attempted(
        self,
        delivery_id: str,
        attempt: WebhookAttempt,
        status: str,
        next_unix: float | None,
        jitter: float = 1.0,
    ) -> None:
        """Record an attempt; `status` the delivery's after it (pending: `next_unix` set,
        `jitter` the random share of the backoff that gave it)."""
        ...

    async def reschedule(self, base_s: float, cap_s: float) -> None:
        """Pending deliveries due again by these retry settings (at a sender's start)."""
        ...

    async def page(
        self, session_id: str, limit: int, cursor: str | None
    ) -> Page[WebhookDelivery]: ...  # newest first


class TicketStore(Protocol):
    """Queue tickets on a shared database (tickets.py): a queued run stored with the
    session's next ticket, and the first one waiting."""

    def take(self, new: NewRun) -> asyncio.Future[int]: ...  # the run stored queued; its ticket
    async def first(self, session_id: str) -> str | None: ...  # the lowest ticket's run id


class ClusterStore(Protocol):
    """What several processes on one database need of it (PostgreSQL): a lease per session,
    held by the one process that runs it; word of new events, cancels and freed sessions from
    the others; jobs that run once across processes. On SQLite one process has the file (its
    lock), `shared` is False and every method is trivial."""

    shared: bool

    async def start(
        self,
        on_events: Callable[[list[tuple[str, int]]], None],
        on_cancel: Callable[[str, str], None],
        on_free: Callable[[str], None],
    ) -> None:
        """Listen: `on_events` gets (run id, last seq) of events another process committed,
        `on_cancel` a run id another process was asked to stop, and the status to stop it with
        (cancelled, interrupted), `on_free` a session id
        another process let go of."""
        ...

    def holds(self, session_id: str) -> bool: ...
    async def hold(self, session_id: str) -> bool:
        """Take the session's lease; False while another process holds it."""
        ...

    async def let_go(self, session_id: str, unless: Callable[[], bool]) -> None:
        """Give the lease back, unless `unless()` says (when it is its turn) it is needed."""
        ...

    async def cancel_elsewhere(self, run_id: str, status: str) -> None: ...
    async def hold_ticket(self, run_id: str) -> None:
        """Say this process is alive to serve the queued run (until `let_ticket_go`)."""
        ...

    async def let_ticket_go(self, run_id: str) -> None: ...
    async def ticket_served(self, run_id: str) -> bool:
        """Whether a live process (another: this one knows its own) waits to run it."""
        ...

    async def queue_moved(self, session_id: str) -> None:
        """Tell the other processes the session's queue changed (`on_free` there)."""
        ...

    async def take_job(self, job: str) -> bool:
        """True: this process does `job` now (`end_job` when done); False: another does."""
        ...

    async def end_job(self, job: str) -> None: ...
    async def close(self) -> None: ...


class LocalCluster:
    """One process has the database: every lease is its own."""

    shared = False

    async def start(
        self,
        on_events: Callable[[list[tuple[str, int]]], None],
        on_cancel: Callable[[str, str], None],
        on_free: Callable[[str], None],
    ) -> None:
        return None

    def holds(self, session_id: str) -> bool:
        return True

    async def hold(self, session_id: str) -> bool:
        return True

    async def let_go(self, session_id: str, unless: Callable[[], bool]) -> None:
        return None

    async def cancel_elsewhere(self, run_id: str, status: str) -> None:
        return None

    async def hold_ticket(self, run_id: str) -> None:
        return None

    async def let_ticket_go(self, run_id: str) -> None:
        return None

    async def ticket_served(self, run_id: str) -> bool:
        return False

    async def queue_moved(self, session_id: str) -> None:
        return None

    async def take_job(self, job: str) -> bool:
        return True

    async def end_job(self, job: str) -> None:
        return None

    async def close(self) -> None:
        return None


class Store(Protocol):
    cluster: ClusterStore
    keys: KeyStore
    webhooks: WebhookStore
    secrets: SecretStore
    agents: AgentStore
    sessions: SessionStore
    messages: MessageStore
    runs: RunStore
    events: EventStore
    search: SearchStore
    transfer: TransferStore
    tickets: TicketStore

    @property
    def commits(self) -> int: ...  # transactions committed so far (the benchmarks count them)

    async def open(self) -> None: ...  # creates or migrates the schema
    async def close(self) -> None: ...  # commits what is queued first
    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        ...

    def withdraw(self, queued: asyncio.Future[Any]) -> bool:
        """Take back a write queued to ride with the next commit, if it still waits (its
        future is then cancelled)."""
        ...
