"""What the server counts, as calls any part may make: the store after each commit, the
runner once per step and once per run, the HTTP edge once per request and once per batch of
events written to a stream. `Meter` counts nothing; `server/metrics.py` is the one that
keeps Prometheus series, so only that module knows the library.

Every call is made per run, step, commit, request or write batch, never per event: a
counter update takes a lock, and the hot paths (a stream's events, a turn's commits) must not
pay one per token.
"""

from __future__ import annotations

from collections.abc import Callable

from server.models import ToolCallRecord


class Meter:
    """Counts nothing: the default of every part, so tests and tools need no registry."""

    def run_ended(self, status: str, seconds: float | None) -> None:
        """A run reached `status`; `seconds` from queued (or resumed) to now, if it ran."""

    def step(
        self,
        provider: str,
        first_token_s: float | None,
        input_tokens: int,
        output_tokens: int,
        tool_calls: list[ToolCallRecord],
    ) -> None:
        """One provider request answered in full, with the tool calls it asked for."""

    def provider_failed(self, provider: str) -> None:
        """One provider request that ended in an error."""

    def committed(self, seconds: float, rows: int, cpu_s: float) -> None:
        """One database transaction: how long it took, how many rows it changed, and the CPU
        time the writer thread spent on it."""

    def events_sent(self, count: int) -> None:
        """One write of `count` events to a stream."""

    def stream(self, delta: int) -> None:
        """A stream opened (+1) or closed (-1)."""

    def request(self, route: str, status: int) -> None:
        """One HTTP request answered: `route` is its template, never the raw path."""

    def compacted(self, reason: str) -> None:
        """A run compacted its session before a step ("budget", "context_too_long")."""

    def webhook_attempt(self, outcome: str) -> None:
        """One webhook delivery attempt: "delivered", "retry" (failed, to be tried again) or
        "failed" (given up)."""

    def watch_runs(self, count: Callable[[], int]) -> None:
        """`count()` is the number of runs active, read when the metrics are read."""

    def exposition(self) -> tuple[bytes, str]:
        """The metrics as text, and their content type."""
        return b"", "text/plain; charset=utf-8"
