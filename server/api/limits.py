"""Per API key limits: runs started in any minute, and streams open at once. Past either a
request is `429 rate_limited` with `Retry-After`. Without auth there are no keys and no
limits (the server then serves its own host only)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from starlette.requests import Request

from server.errors import RateLimited

WINDOW_S = 60.0


class KeyLimits:
    def __init__(
        self, runs_per_min: int, streams: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.runs_per_min = runs_per_min
        self.streams = streams
        self.clock = clock
        self._starts: dict[str, deque[float]] = {}  # key id → its run starts in the window
        self._open: dict[str, int] = {}  # key id → its streams open

    def start_run(self, key_id: str | None) -> None:
        """Count a run the key starts now, or refuse it."""
        if key_id is None:
            return
        at = self.clock()
        starts = self._starts.setdefault(key_id, deque())
        while starts and at - starts[0] >= WINDOW_S:
            starts.popleft()
        if len(starts) >= self.runs_per_min:
            wait = math.ceil(WINDOW_S - (at - starts[0]))
            raise RateLimited(
                f"this key started {self.runs_per_min} runs in the last minute, its limit "
                f"(--rate-runs-per-min); retry in {wait} s",
                retry_after=max(1, wait),
            )
        starts.append(at)

    def check_stream(self, key_id: str | None) -> None:
        """Refuse now if the key could not open one more stream."""
        if key_id is not None and self._open.get(key_id, 0) >= self.streams:
            raise RateLimited(
                f"this key has {self.streams} streams open, its limit (--max-streams-per-key); "
                "close one, or retry later",
            )

    def open_stream(self, key_id: str | None) -> Callable[[], None]:
        """Count a stream the key opens; call what is returned when it closes."""
        if key_id is None:
            return _nothing
        self.check_stream(key_id)
        self._open[key_id] = self._open.get(key_id, 0) + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            left = self._open[key_id] - 1
            if left:
                self._open[key_id] = left
            else:
                del self._open[key_id]

        return close


def _nothing() -> None:
    return None


def key_of(request: Request) -> str | None:
    """The id of the key the request carries (api/auth.py put it there), if auth is on."""
    key = request.scope.get("state", {}).get("key")
    return None if key is None else str(key.id)


def limits(request: Request) -> KeyLimits:
    found: KeyLimits = request.app.state.limits
    return found
