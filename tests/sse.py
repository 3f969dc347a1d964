"""sessiond's streams as the tests read them: every block and comment, as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from server.providers.sse import SseEvent as Event
from server.providers.sse import sse_events

__all__ = ["Event", "collect", "events", "typed"]


def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Each event as soon as its blank line arrives (a `retry:`-only block and comments too)."""
    return sse_events(response.aiter_text())


async def collect(response: httpx.Response, until: str = "done") -> list[Event]:
    got = []
    async for event in events(response):
        got.append(event)
        if event.event == until:
            break
    return got


def typed(events_: list[Event]) -> list[Event]:
    """Only the run's own events: no `retry:` block, no ping, no comment."""
    return [e for e in events_ if e.dispatched and e.retry is None and e.event != "ping"]
