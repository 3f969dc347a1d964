"""`sessiond chat` and the small HTTP client the terminal commands share.

`sessiond chat` creates or resumes the named session (a generated name, printed, when none is
given; a new one works in --work-dir, or in the current folder when the server allows it),
sends each line as a message over POST /sessions/{id}/message/stream and prints the reply as
it streams, with tool calls shown one line each. Ctrl-C stops the current reply (the run is
cancelled with the connection); Ctrl-D leaves.

`Client` talks to a running sessiond; every failure -- the server unreachable, or an error
answer -- becomes a ClientError carrying a message fit to print.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import httpx

from server.providers.sse import SseEvent, sse_events_sync

DEFAULT_URL = "http://127.0.0.1:2323"
PROMPT = "> "
WIDTH = 100


class ClientError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # the error's `field`, when the server named one


def default_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("SESSIOND_URL") or DEFAULT_URL


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=default_url(),
        help="the server (default: $SESSIOND_URL or http://127.0.0.1:2323)",
    )


def error_field(response: httpx.Response) -> str | None:
    try:
        field = response.json()["error"].get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return field if isinstance(field, str) else None


def error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} ({error['type']}, HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class Client:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        # a run's stream may be quiet between pings for up to the server's ping interval
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, read=300))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach sessiond at {self.url}: {exc}") from exc
        if response.is_error:
            raise ClientError(error_message(response), error_field(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextmanager
    def stream(self, path: str, body: dict[str, Any]) -> Iterator[Iterator[SseEvent]]:
        try:
            with self.http.stream("POST", path, json=body) as response:
                if response.is_error:
                    response.read()
                    raise ClientError(error_message(response))
                events = sse_events_sync(response.iter_text())
                yield (event for event in events if event.dispatched)
        except httpx.HTTPError as exc:
            raise ClientError(f"the stream from {self.url} broke off: {exc}") from exc


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

    def show(self, event: SseEvent) -> None:
        data: dict[str, Any] = event.json if event.data else {}
        match event.event:
            case "text_delta":
                self.write(data["text"])
            case "content_block_start" if data["content_block"]["type"] == "tool_use":
                self.tools[data["index"]] = (data["content_block"]["name"], [])
            case "input_json_delta" if data["index"] in self.tools:
                self.tools[data["index"]][1].append(data["partial_json"])
            case "content_block_stop" if data["index"] in self.tools:
                name, parts = self.tools.pop(data["index"])
                self.line(f"  -> {name} {clip(''.join(parts) or '{}', WIDTH - len(name))}")
            case "tool_result":
                mark = "!!" if data["is_error"] else "<-"
                self.line(f"  {mark} {clip(data['content']) or '(no output)'}")
            case "requires_action":
                names = ", ".join(call["name"] for call in data["tool_calls"])
                self.line(f"[the run waits for client tools this chat cannot run: {names}]")
            case "error":
                self.line(f"[error] {data['error']['message']}")
            case "done":
                if data["status"] != "completed":
                    self.line(f"[{data['status']}]")
                self.line("")


def open_session(
    client: Client, name: str, agent: str | None, work_dir: str | None, out: TextIO
) -> dict[str, Any]:
    """Create (or resume) the session. A new one works in `work_dir`, else in the current
    folder if the server allows it (its tools then have files to work on), else in none."""
    body: dict[str, Any] = {"name": name, "if_exists": "resume"}
    if agent:
        body["agent_id"] = agent
    folder = os.path.abspath(work_dir or os.getcwd())
    try:
        session: dict[str, Any] = client.json(
            "POST", "/sessions", json={**body, "work_dir": folder}
        )
    except ClientError as exc:
        if work_dir is not None or exc.field != "work_dir":
            raise
        out.write(f"[the server does not allow {folder} as a work_dir; tools have none]\n")
        session = client.json("POST", "/sessions", json=body)
    return session


def turn(client: Client, session_id: str, text: str, agent: str | None, out: TextIO) -> None:
    body: dict[str, Any] = {"message": text, "cancel_on_disconnect": True}
    if agent:
        body["agent_id"] = agent
    renderer = Renderer(out)
    try:
        # read on past `done` to the stream's end: the server ends it once the run's end is
        # recorded, so leaving then cannot cancel the run at its last moment
        with client.stream(f"/sessions/{session_id}/message/stream", body) as events:
            for event in events:
                renderer.show(event)
    except KeyboardInterrupt:
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
        count = session["message_count"]
        state = f"resumed, {count} messages" if count else "new"
        out.write(f"session {session['name']} ({state}); Ctrl-D to leave\n")
        while (line := _prompt(out, source)) is not None:
            if line.strip():
                try:
                    turn(client, session["id"], line, agent, out)
                except ClientError as exc:
                    out.write(f"[error] {exc}\n")
        out.write("\n")
        return 0
    except ClientError as exc:
        print(f"sessiond chat: {exc}", file=sys.stderr)
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
