"""`sessiond chat` and the small HTTP client the terminal commands share.

`sessiond chat` creates or resumes the named session (a generated name, printed, when none is
given; a new one works in --work-dir, or in the current folder when the server allows it),
sends each line as a message over POST /sessions/{id}/message/stream and prints the reply as
it streams, with tool calls shown one line each. Ctrl-C stops the current reply (its run is
cancelled); Ctrl-D leaves.

It talks to the server through the SDK (server.client), so a dropped connection mid-reply is
resumed where it broke off, and $SESSIOND_API_KEY is sent where the server has keys.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from typing import TextIO

from server.client import ApiError, Client, InvalidRequest
from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    Done,
    Error,
    Event,
    InputJsonDelta,
    MessageStart,
    RequiresAction,
    TextDelta,
    ToolResult,
)
from server.models import SessionRecord, ToolUseBlock

PROMPT = "> "
WIDTH = 100


def generated_name() -> str:
    return f"chat-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def clip(text: str, width: int = WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class Renderer:
    """Prints one run's events: text as it comes, each tool call and result on a line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.at_line_start = True
        self.tools: dict[int, tuple[str, list[str]]] = {}  # block index → name, input parts

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.at_line_start = text.endswith("\n")

    def line(self, text: str) -> None:
        self.write(("" if self.at_line_start else "\n") + text + "\n")

    def show(self, event: Event) -> None:
        match event:
            case TextDelta(text=text):
                self.write(text)
            case ContentBlockStart(index=index, content_block=ToolUseBlock(name=name)):
                self.tools[index] = (name, [])
            case InputJsonDelta(index=index, partial_json=part) if index in self.tools:
                self.tools[index][1].append(part)
            case ContentBlockStop(index=index) if index in self.tools:
                name, parts = self.tools.pop(index)
                self.line(f"  -> {name} {clip(''.join(parts) or '{}', WIDTH - len(name))}")
            case ToolResult(content=content, is_error=is_error):
                mark = "!!" if is_error else "<-"
                self.line(f"  {mark} {clip(content) or '(no output)'}")
            case RequiresAction(tool_calls=calls):
                names = ", ".join(call.name for call in calls)
                self.line(f"[the run waits for client tools this chat cannot run: {names}]")
            case Error(error=error):
                self.line(f"[error] {error.message}")
            case Done(status=status):
                if status != "completed":
                    self.line(f"[{status}]")
                self.line("")


def describe(exc: ApiError) -> str:
    if exc.status:
        return f"{exc.message} ({exc.type}, HTTP {exc.status})"
    return exc.message


def open_session(
    client: Client, name: str, agent: str | None, work_dir: str | None, out: TextIO
) -> SessionRecord:
    """Create (or resume) the session. A new one works in `work_dir`, else in the current
    folder if the server allows it (its tools then have files to work on), else in none."""
    folder = os.path.abspath(work_dir or os.getcwd())
    try:
        return client.sessions.create(
            name=name, if_exists="resume", agent_id=agent, work_dir=folder
        )
    except InvalidRequest as exc:
        if work_dir is not None or exc.extra.get("field") != "work_dir":
            raise
        out.write(f"[the server does not allow {folder} as a work_dir; tools have none]\n")
        return client.sessions.create(name=name, if_exists="resume", agent_id=agent)


def turn(client: Client, session_id: str, text: str, agent: str | None, out: TextIO) -> None:
    renderer = Renderer(out)
    run_id: str | None = None
    try:
        for event in client.stream(session_id, text, agent_id=agent):
            if isinstance(event, MessageStart):
                run_id = event.run_id or run_id
            renderer.show(event)
    except KeyboardInterrupt:
        # Ctrl-C stops the run itself: a connection that merely drops is resumed instead
        if run_id is not None:
            client.runs.cancel(session_id, run_id)
        renderer.line("[stopped]")


def read_line(out: TextIO, source: TextIO) -> str | None:
    """One line from the user; None on Ctrl-D."""
    out.write(PROMPT)
    out.flush()
    line = source.readline()
    if not line:
        return None
    return line.rstrip("\n")


def run(
    url: str,
    name: str | None,
    agent: str | None,
    out: TextIO,
    source: TextIO,
    work_dir: str | None = None,
) -> int:
    client = Client(url)
    try:
        session = open_session(client, name or generated_name(), agent, work_dir, out)
        count = session.message_count
        state = f"resumed, {count} messages" if count else "new"
        out.write(f"session {session.name} ({state}); Ctrl-D to leave\n")
        while (line := _prompt(out, source)) is not None:
            if line.strip():
                try:
                    turn(client, session.id, line, agent, out)
                except ApiError as exc:
                    out.write(f"[error] {describe(exc)}\n")
        out.write("\n")
        return 0
    except ApiError as exc:
        print(f"sessiond chat: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while opening the session
        return 130
    finally:
        client.close()


def _prompt(out: TextIO, source: TextIO) -> str | None:
    while True:
        try:
            return read_line(out, source)
        except KeyboardInterrupt:
            out.write("\n")


def main(url: str, name: str | None, agent: str | None, work_dir: str | None = None) -> int:
    return run(url, name, agent, sys.stdout, sys.stdin, work_dir)
