"""The one reader of `text/event-stream` bodies: the providers read a model's stream with it,
the terminal chat and the tests read sessiond's own.

It follows the WHATWG parsing rules for event streams: lines end at CRLF, LF or CR only; a
U+FEFF opening the stream is dropped; `data` lines join with "\\n"; the last event ID persists
from one event to the next; `retry` takes ASCII digits only; an event the stream does not end
with a blank line is dropped. Beyond the events a browser's EventSource fires (`dispatched`),
it reports what a reader of the wire needs to see as well: comments (`: keep-alive`), and
blocks without data (the `retry:`-only block sessiond opens its streams with).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import msgspec

_BOM = "\ufeff"


class SseEvent(msgspec.Struct, frozen=True):
    """A block ended by a blank line, or a comment (`comment` set, `event` empty)."""

    event: str = "message"
    data: str = ""
    id: str | None = None  # this block's own `id` field, if it had one
    last_id: str = ""  # the stream's last event ID when the block ended (`id` persists)
    retry: int | None = None  # this block's own valid `retry` field, if it had one
    comment: str | None = None  # a comment line's text, for a comment
    dispatched: bool = True  # an event an EventSource fires: a block with data

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SseLines:
    """An SSE stream's text cut into lines where the format ends them: at CRLF, LF or CR only.
    httpx's line iterators end lines where `str.splitlines` does, at U+2028, U+0085 and other
    characters that JSON carries unescaped (msgspec writes them raw), and so cut an event's
    data in two. A line not ended when the stream ends is never returned: it cannot complete
    an event."""

    __slots__ = ("_cr", "_rest", "_started")

    def __init__(self) -> None:
        self._rest = ""
        self._cr = False  # the last piece ended with CR: an LF first in the next ends nothing
        self._started = False  # the stream's first character has been seen

    def feed(self, text: str) -> list[str]:
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix(_BOM)  # httpx decodes UTF-8 without dropping it
        if self._cr and text.startswith("\n"):
            text = text[1:]
        if "\r" in text:
            self._cr = text.endswith("\r")
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        else:
            self._cr = False
        *lines, self._rest = (self._rest + text).split("\n")
        return lines


class SseParser:
    """Turns a stream's text, piece by piece, into events as their blank lines arrive."""

    __slots__ = ("_data", "_event", "_id", "_lines", "_open", "_retry", "last_id")

    def __init__(self) -> None:
        self._lines = SseLines()
        self.last_id = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._open = False  # a field other than `data` has come since the last blank line

    def feed(self, text: str) -> list[SseEvent]:
        # One call a piece, and a `data` line touches only the list (bench provider).
        events: list[SseEvent] = []
        data = self._data
        for line in self._lines.feed(text):
            if not line:
                if data or self._open:
                    events.append(self._dispatch())
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event, self._open = value, True
            elif not name:
                events.append(SseEvent("", comment=value, dispatched=False))
            else:
                self._field(name, value)
        return events

    def _field(self, name: str, value: str) -> None:
        self._open = True
        if name == "id":
            if "\0" not in value:
                self._id = self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> SseEvent:
        data = self._data
        if not self._open:  # data lines only, as most model streams send
            event = SseEvent("message", "\n".join(data), None, self.last_id)
            data.clear()
            return event
        event = SseEvent(
            self._event or "message",
            "\n".join(data),
            self._id,
            self.last_id,
            self._retry,
            dispatched=bool(data),
        )
        data.clear()
        self._event, self._id, self._retry, self._open = "", None, None, False
        return event


async def sse_events(texts: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    async for text in texts:
        for event in parser.feed(text):
            yield event


def sse_events_sync(texts: Iterable[str]) -> Iterator[SseEvent]:
    parser = SseParser()
    for text in texts:
        yield from parser.feed(text)
