"""Start-up repair after a crash: runs a dead process left `running` or `queued` become
`interrupted`, their sessions go back to `idle`, a dangling `tool_use` gets an `is_error`
result, and each such run's event log is closed with `error` and `done` so that replaying it
ends cleanly. Usage of the step that was cut short is recovered from the event log.

A running run's closing events are numbered past the run log's WINDOW: the dead process may
have shown that many events beyond its last commit, and a client resuming from any of them
must get the run's end, never a reused id."""

from __future__ import annotations

import logging

from server import events
from server.events import (
    Done,
    Error,
    Event,
    EventRow,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    TextDelta,
)
from server.ids import now
from server.models import ErrorInfo, Run, Turn, Usage
from server.runs.runlog import WINDOW
from server.session import INTERRUPTED, answer_all, unanswered
from server.store import Finish, Store

log = logging.getLogger("sessiond.recovery")
MESSAGE = "the server stopped before the run finished; completed steps are kept"


def usage_from_log(rows: list[EventRow]) -> tuple[Usage, int]:
    """The run's usage as its events show it, and the number of completed steps."""
    total, step, steps = Usage(), Usage(), 0
    for *_, data in rows:
        match events.decode(data):
            case MessageStart(message=info):
                total, step = total + step, Usage(info.usage.input_tokens, 0)
            case TextDelta() | InputJsonDelta():
                step.output_tokens += 1
            case MessageDelta(usage=usage):
                step = Usage(max(step.input_tokens, usage.input_tokens), usage.output_tokens)
                steps += 1
    return total + step, steps


async def interrupt_unfinished(store: Store) -> int:
    count = 0
    for stored in await store.runs.unfinished():
        if stored.run.status != "requires_action":  # a paused run survives restarts as it is
            await interrupt_run(store, stored.run)
            count += 1
    await store.sessions.idle_orphans()
    if count:
        log.warning("marked %d unfinished run(s) from an earlier process as interrupted", count)
    return count


async def interrupt_run(store: Store, run: Run) -> None:
    """End one run a dead process left: its closing events, its history repaired."""
    rows = await store.events.read(run.id, 0, 10**9)
    seen, _ = usage_from_log(rows)
    delta = Usage(
        max(0, seen.input_tokens - run.usage.input_tokens),
        max(0, seen.output_tokens - run.usage.output_tokens),
    )
    history = await store.messages.history(run.session_id)
    missing = unanswered([Turn(m.role, m.content) for m in history if m.role != "compaction"])
    repair = answer_all(missing, INTERRUPTED) if run.status == "running" else []
    error = ErrorInfo("interrupted", MESSAGE)
    last = rows[-1][1] if rows else 0
    if run.status == "running":
        last += WINDOW
    closing: list[Event] = [
        Error(error),
        Done(run.usage + delta, run.steps, run.id, "interrupted", "interrupted"),
    ]
    store.events.append(
        (run.id, last + i + 1, events.event_type(ev), events.encode(ev))
        for i, ev in enumerate(closing)
    )
    end = Finish(
        status="interrupted",
        stop_reason="interrupted",
        error=error,
        usage=delta,
        pending=[],
        session_status=None,
    )
    await store.runs.close(run.id, run.session_id, repair, end, now())
