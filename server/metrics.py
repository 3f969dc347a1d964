"""The server's Prometheus metrics (prometheus-client), one registry per app: two apps in
one process (the tests run many) keep series of their own, and nothing is process-wide.

Labelled children are looked up once per label set and kept, so a count costs the child's
lock and an add (see server/meter.py for when each is called).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from server.meter import Meter
from server.models import ToolCallRecord

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


class PrometheusMeter(Meter):
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "sessiond_runs", "Runs ended, by final status", ["status"], registry=registry
        )
        self.runs_active = Gauge(
            "sessiond_runs_active", "Runs running or queued", registry=registry
        )
        self.run_seconds = Histogram(
            "sessiond_run_seconds",
            "Seconds from a run queued to its end",
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.streams_open = Gauge("sessiond_streams_open", "Event streams open", registry=registry)
        self.events = Counter(
            "sessiond_events_sent", "Events written to streams", registry=registry
        )
        self.provider_requests = Counter(
            "sessiond_provider_requests",
            "Requests to model providers, by outcome (ok, error)",
            ["provider", "outcome"],
            registry=registry,
        )
        self.first_token = Histogram(
            "sessiond_provider_first_token_seconds",
            "Seconds from a provider request to its first content block",
            ["provider"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "sessiond_tokens",
            "Tokens reported by providers, by direction (input, output)",
            ["provider", "direction"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "sessiond_tool_calls",
            "Server tool calls, by outcome (ok, error)",
            ["tool", "outcome"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "sessiond_db_commit_seconds",
            "Seconds one database transaction took",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.commit_rows = Histogram(
            "sessiond_db_commit_rows",
            "Rows one database transaction changed",
            buckets=ROW_BUCKETS,
            registry=registry,
        )
        self.writer_cpu = Counter(
            "sessiond_db_writer_cpu_seconds",
            "CPU seconds the database writer thread spent in transactions",
            registry=registry,
        )
        self.requests = Counter(
            "sessiond_http_requests",
            "HTTP requests answered, by route template and status",
            ["route", "status"],
            registry=registry,
        )
        self.compactions = Counter(
            "sessiond_compactions",
            "Compactions made by runs, by reason (budget, context_too_long)",
            ["reason"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "sessiond_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            ["outcome"],
            registry=registry,
        )
        self._children: dict[tuple[object, ...], Counter] = {}
        self._first_tokens: dict[str, Histogram] = {}

    def _child(self, metric: Counter, *labels: str) -> Counter:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            self._children[key] = child = metric.labels(*labels)
        return child

    def run_ended(self, status: str, seconds: float | None) -> None:
        self._child(self.runs, status).inc()
        if seconds is not None:
            self.run_seconds.observe(seconds)

    def step(
        self,
        provider: str,
        first_token_s: float | None,
        input_tokens: int,
        output_tokens: int,
        tool_calls: list[ToolCallRecord],
    ) -> None:
        self._child(self.provider_requests, provider, "ok").inc()
        if first_token_s is not None:
            histogram = self._first_tokens.get(provider)
            if histogram is None:
                self._first_tokens[provider] = histogram = self.first_token.labels(provider)
            histogram.observe(first_token_s)
        if input_tokens:
            self._child(self.tokens, provider, "input").inc(input_tokens)
        if output_tokens:
            self._child(self.tokens, provider, "output").inc(output_tokens)
        for call in tool_calls:
            self._child(self.tool_calls, call.name, "error" if call.is_error else "ok").inc()

    def provider_failed(self, provider: str) -> None:
        self._child(self.provider_requests, provider, "error").inc()

    def committed(self, seconds: float, rows: int, cpu_s: float) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_rows.observe(rows)
        self.writer_cpu.inc(cpu_s)

    def events_sent(self, count: int) -> None:
        self.events.inc(count)

    def stream(self, delta: int) -> None:
        self.streams_open.inc(delta)

    def request(self, route: str, status: int) -> None:
        self._child(self.requests, route, str(status)).inc()

    def compacted(self, reason: str) -> None:
        self._child(self.compactions, reason).inc()

    def webhook_attempt(self, outcome: str) -> None:
        self._child(self.webhook_attempts, outcome).inc()

    def watch_runs(self, count: Callable[[], int]) -> None:
        self.runs_active.set_function(count)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
