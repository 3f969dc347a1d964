"""Importing exported sessions: check that each is whole and its history one a model accepts,
give everything new ids (unless the import keeps them), and recompute the totals from the runs
so that a session's counters always equal the sum over its runs.

A tool call left without a result before the history goes on (a fork cut right after the
call, then continued) is answered here as the rebuild answers it (`session.History`): an
error result, marked as added on import, at the head of the next user message (or in a user
message of its own before an assistant one). Sessiond writes such histories itself, so its
own exports import back; anything else malformed is refused.

An import is all or nothing: the first problem found refuses the whole of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from server.errors import InvalidRequest
from server.ids import is_ulid, new_ulid
from server.models import (
    FINISHED_STATUSES,
    ContentBlock,
    ErrorInfo,
    Message,
    Run,
    ToolResultBlock,
    ToolUseBlock,
    Turn,
    Usage,
    new_messages,
)
from server.session import answer_all, repair
from server.transfer.transcript import SessionExport

UNFINISHED = "the run had not finished when its session was exported"
ANSWERED_ON_IMPORT = (
    "no result: the imported history held none for this tool call (answered on import)"
)
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
MAX_COUNT = 2**40  # steps or tokens of one run: far above any real run, far below SQLite's


class Repaired(msgspec.Struct):
    """Tool calls of a session that the import answered (see ANSWERED_ON_IMPORT)."""

    session_id: str
    tool_use_ids: list[str]


def plan(
    exports: list[SessionExport], keep_ids: bool, now: str
) -> tuple[list[SessionExport], list[Repaired]]:
    """The sessions as they will be stored, and the tool calls answered on the way (under
    the sessions' new ids)."""
    answered: list[tuple[str, list[str]]] = []
    mended = []
    for export in exports:
        export, calls = answer_open_calls(export)
        if calls:
            answered.append((export.session.id, calls))
        check(export, keep_ids)
        mended.append(export)
    _check_unique(mended)
    ids = _id_map(mended, keep_ids)
    repaired = [Repaired(ids[sid], calls) for sid, calls in answered]
    return [_restored(export, ids, now) for export in mended], repaired


def answer_open_calls(export: SessionExport) -> tuple[SessionExport, list[str]]:
    """The export with every tool call that the history goes on past without a result
    answered; and those calls' ids. Calls still open at the very end stay open (a paused
    or interrupted run, answered when the session runs)."""
    messages: list[Message] = []
    answered: list[str] = []
    open_calls: list[ToolUseBlock] = []
    added = 0  # messages inserted so far: the ones after them move up (a bad seq stays bad)
    for message in export.messages:
        if open_calls and message.role == "assistant":
            filler = answer_all(open_calls, ANSWERED_ON_IMPORT)
            seq = message.seq + added
            messages += new_messages(
                message.session_id, seq, [("user", filler)], None, message.created_at
            )
            answered += [call.id for call in open_calls]
            added += 1
        elif open_calls:
            content, missing = _answered(message.content, open_calls)
            message = msgspec.structs.replace(message, content=content)
            answered += missing
        messages.append(msgspec.structs.replace(message, seq=message.seq + added))
        open_calls = [
            b
            for b in message.content
            if isinstance(b, ToolUseBlock) and message.role == "assistant"
        ]
    if not answered:
        return export, []
    return msgspec.structs.replace(export, messages=messages), answered


def _answered(
    content: list[ContentBlock], open_calls: list[ToolUseBlock]
) -> tuple[list[ContentBlock], list[str]]:
    """A user message's blocks with results for the open calls it does not answer, placed
    after its own results (results come first in a message); and those calls' ids."""
    given = {b.tool_use_id for b in content if isinstance(b, ToolResultBlock)}
    missing = [call for call in open_calls if call.id not in given]
    if not missing:
        return content, []
    lead = 0
    while lead < len(content) and isinstance(content[lead], ToolResultBlock):
        lead += 1
    filled = [*content[:lead], *answer_all(missing, ANSWERED_ON_IMPORT), *content[lead:]]
    return filled, [call.id for call in missing]


def check(export: SessionExport, keep_ids: bool) -> None:
    session = export.session
    where = f"session {session.id!r}"
    if not session.id or len(session.id) > 100:
        raise InvalidRequest(f"{where}: a session id must hold 1 to 100 characters")
    if keep_ids:
        _check_ulids(where, [session.id, *(m.id for m in export.messages)])
        _check_ulids(where, [run.id for run in export.runs])
    for stamp in (session.created_at, session.updated_at, session.archived_at):
        _check_stamp(where, stamp)
    run_ids = {run.id for run in export.runs}
    for run in export.runs:
        _check_run(where, run, session.id)
    for position, message in enumerate(export.messages, 1):
        _check_message(where, message, position, session.id, run_ids)
    problem = history_problem(export.messages)
    if problem is not None:
        raise InvalidRequest(f"{where}: {problem}")


def _check_message(
    where: str, message: Message, position: int, session_id: str, run_ids: set[str]
) -> None:
    if not message.id or len(message.id) > 100:
        raise InvalidRequest(f"{where}: a message id must hold 1 to 100 characters")
    if message.session_id != session_id:
        raise InvalidRequest(
            f"{where}: message {message.id!r} belongs to session {message.session_id!r}"
        )
    if message.seq != position:
        raise InvalidRequest(
            f"{where}: messages must be numbered 1, 2, 3… in order; found seq {message.seq} "
            f"at position {position}"
        )
    if message.run_id is not None and message.run_id not in run_ids:
        raise InvalidRequest(
            f"{where}: message {message.seq} names run {message.run_id!r}, which the export "
            "does not hold"
        )
    _check_stamp(where, message.created_at)


def _check_ulids(where: str, ids: list[str]) -> None:
    for key in ids:
        if not (is_ulid(key) and key == key.upper()):
            raise InvalidRequest(f"{where}: keep_ids needs ids that are ULIDs, not {key!r}")


def _check_run(where: str, run: Run, session_id: str) -> None:
    if not run.id or len(run.id) > 100:
        raise InvalidRequest(f"{where}: a run id must hold 1 to 100 characters")
    if run.session_id != session_id:
        raise InvalidRequest(f"{where}: run {run.id!r} belongs to session {run.session_id!r}")
    for count in (run.steps, run.usage.input_tokens, run.usage.output_tokens):
        if not 0 <= count <= MAX_COUNT:
            raise InvalidRequest(f"{where}: run {run.id!r} has a count out of range: {count}")
    for stamp in (run.created_at, run.started_at, run.finished_at):
        _check_stamp(where, stamp)


def check_stamps(where: str, stamps: list[str | None]) -> None:
    for stamp in stamps:
        _check_stamp(where, stamp)


def _check_stamp(where: str, stamp: str | None) -> None:
    if stamp is not None and not _STAMP.match(stamp):
        raise InvalidRequest(f"{where}: {stamp!r} is not an RFC 3339 UTC timestamp")


def history_problem(messages: list[Message]) -> str | None:
    """What makes this stored history invalid, or None. Every tool call must be answered by
    the next message, and every result must answer one; calls still open at the very end
    are a paused or interrupted run, which `session.repair` answers when the session runs."""
    open_calls: list[str] = []
    seen: set[str] = set()
    messages = [m for m in messages if m.role != "compaction"]  # summaries answer nothing
    for message in messages:
        problem = _message_problem(message, open_calls, seen)
        if problem is not None:
            return f"message {message.seq}: {problem}"
        if message.role == "assistant":
            open_calls = [b.id for b in message.content if isinstance(b, ToolUseBlock)]
        else:
            open_calls = []
    turns = [Turn(m.role, m.content) for m in messages if m.role != "compaction"]
    fixed, merged = repair(turns), _merged(turns)
    if fixed != merged and fixed[:-1] != merged:
        return "the history is not one a model accepts (session.repair would change it)"
    return None


def _message_problem(message: Message, open_calls: list[str], seen: set[str]) -> str | None:
    if not message.content:
        return "a message must hold at least one block"
    uses = [b for b in message.content if isinstance(b, ToolUseBlock)]
    results = [b for b in message.content if isinstance(b, ToolResultBlock)]
    if message.role == "assistant":
        if results:
            return "an assistant message cannot hold a tool_result"
        if open_calls:
            return f"the tool calls {', '.join(open_calls)} before it have no result"
        for use in uses:
            if use.id in seen:
                return f"tool call id {use.id!r} is used twice"
            seen.add(use.id)
        return None
    if uses:
        return "a user message cannot hold a tool_use"
    if message.content[: len(results)] != results:
        return "tool_result blocks must come first in their message"
    answered = [r.tool_use_id for r in results]
    stray = [call for call in answered if call not in open_calls]
    if stray or len(set(answered)) != len(answered):
        return f"a tool_result answers no open tool call ({', '.join(stray) or 'a repeat'})"
    missing = [call for call in open_calls if call not in answered]
    if missing:
        return f"the tool calls {', '.join(missing)} have no result"
    return None


def _merged(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, [*merged[-1].content, *turn.content])
        else:
            merged.append(Turn(turn.role, list(turn.content)))
    return merged


def _check_unique(exports: list[SessionExport]) -> None:
    _unique("session id", (e.session.id for e in exports))
    _unique("session name", (e.session.name for e in exports if e.session.name is not None))
    _unique("message id", (m.id for e in exports for m in e.messages))
    _unique("run id", (r.id for e in exports for r in e.runs))


def _unique(kind: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise InvalidRequest(f"the import holds {kind} {value!r} twice")
        seen.add(value)


def _id_map(exports: list[SessionExport], keep_ids: bool) -> dict[str, str]:
    old = [e.session.id for e in exports]
    old += [m.id for e in exports for m in e.messages]
    old += [r.id for e in exports for r in e.runs]
    return {key: key if keep_ids else new_ulid() for key in old}


def _restored(export: SessionExport, ids: dict[str, str], now: str) -> SessionExport:
    session = export.session
    runs = [_run(run, ids, now) for run in export.runs]
    usage = sum((run.usage for run in runs), Usage())
    record = msgspec.structs.replace(
        session,
        id=ids[session.id],
        status="failed" if session.status == "failed" else "idle",
        message_count=len(export.messages),
        turn_count=sum(1 for run in runs if run.started_at is not None),
        usage=usage,
        parent_id=ids.get(session.parent_id or "", session.parent_id),
        forked_from_message_id=ids.get(
            session.forked_from_message_id or "", session.forked_from_message_id
        ),
        expires_at=None,
        updated_at=now,  # the import is the session's latest activity (its TTL counts from it)
    )
    messages = [
        msgspec.structs.replace(
            m,
            id=ids[m.id],
            session_id=record.id,
            run_id=ids[m.run_id] if m.run_id is not None else None,
        )
        for m in export.messages
    ]
    return SessionExport(export.version, record, runs, messages)


def _run(run: Run, ids: dict[str, str], now: str) -> Run:
    run = msgspec.structs.replace(
        run, id=ids[run.id], session_id=ids[run.session_id], queue_position=None
    )
    if run.status in FINISHED_STATUSES:
        return run
    return msgspec.structs.replace(
        run,
        status="interrupted",
        error=ErrorInfo("interrupted", UNFINISHED),
        pending_tool_calls=[],
        finished_at=now,
    )
