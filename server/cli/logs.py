"""The process's log lines: one JSON object per line (for a log collector), or text (for a
person at a terminal). The format is `--log-format`, else JSON unless stdout is a terminal.

A record's structured fields travel in `extra={"fields": {...}}` (the request line of
api/observe.py, the run line of runs/driver.py): JSON puts them beside `time`, `level`,
`logger` and `message`; text appends them as `key=value`. What goes into fields is chosen
where the line is made, and never holds a key; message content and tool input only with
`--log-content`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _stamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds, as every timestamp of the API."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_encode = msgspec.json.Encoder(enc_hook=str).encode  # what JSON cannot hold, as its str()


class JsonFormatter(logging.Formatter):
    """A line a request costs: a few microseconds (msgspec), not the json module's fifteen."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in fields_of(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = fields_of(record)
        if not fields:
            return text
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return f"{text} {pairs}"


def chosen(log_format: str | None, stdout: TextIO | None = None) -> str:
    if log_format is not None:
        return log_format
    out = stdout or sys.stdout
    return "text" if out.isatty() else "json"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes the lines an event loop's turn makes together, at the end
    of that turn: a short blocking turn makes two lines (its request's and its run's), and 32
    clients' turns finish in the same few turns of the loop, so one system call carries many
    lines instead of one each (bench turns). A line made where no loop runs (start-up, the
    writer thread, a command), or on a second loop while the first holds lines, is written at
    once. `flush` and `close` write what is held, so an orderly exit loses nothing; a kill -9
    loses at most the lines of the turn it interrupts."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._holder: asyncio.AbstractEventLoop | None = None  # the loop that will write them

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or (self._held and loop is not self._holder):
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        if not self._held:
            self._holder = loop
            loop.call_soon(self._write_held)
        self._held.append(line)

    def _write_held(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        held, self._held, self._holder = self._held, [], None
        if held:
            try:
                self.stream.write("".join(held))
                self.stream.flush()
            except Exception:  # as logging does: a broken stream must not stop the server
                if logging.raiseExceptions:
                    sys.stderr.write("--- logging error: could not write log lines ---\n")

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()
            super().flush()


def setup(log_format: str | None, level: str) -> None:
    """The root logger's one handler, on stderr, in the chosen format; uvicorn's loggers
    propagate to it (`sessiond serve` gives uvicorn no logging config of its own)."""
    handler = TurnHandler(sys.stderr)
    handler.setFormatter(formatter(chosen(log_format)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
