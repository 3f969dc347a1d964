"""A small incremental SSE reader for tests, following the WHATWG parsing rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.providers.http import sse_lines


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    raw: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Yield each event as soon as its blank line arrives (a `retry:`-only block included)."""
    current = Event()
    data: list[str] = []
    async for line in sse_lines(response.aiter_text()):
        if line == "":
            if data or current.retry is not None or current.id is not None:
                current.data = "\n".join(data)
                yield current
            current, data = Event(), []
            continue
        current.raw.append(line)
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry" and value.isdigit():
            current.retry = int(value)


async def collect(response: httpx.Response, until: str = "done") -> list[Event]:
    got = []
    async for event in events(response):
        got.append(event)
        if event.event == until:
            break
    return got


def typed(events_: list[Event]) -> list[Event]:
    """Only the run's own events: no `retry:` block, no ping."""
    return [e for e in events_ if e.retry is None and e.event != "ping"]
