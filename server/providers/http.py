"""The HTTP side every remote provider shares: POST one streaming request, retry what is safe
to retry, read the reply's Server-Sent Events, and turn every failure into a ProviderError.

Retrying is safe only before the reply's body starts: once events have reached the loop a
retry would repeat them, so a failure mid-stream is final (`retryable=False`). A `retry-after`
longer than `retry_max_s` is not waited out: we give up at once and pass it on in the error.

The API key travels only in `Call.headers`, which stay out of reprs; upstream text is
scrubbed of every form of it (`scrub`) before it reaches a message.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import random
import re
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from server.errors import InvalidRequest, ProviderError
from server.events import StepEvent
from server.providers.base import ProviderContext, ProviderSettings, Target
from server.providers.sse import SseEvent, sse_events

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
_RETRY_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
_DETAIL_LIMIT = 500


class HttpOptions(msgspec.Struct):
    """The `agent.options` every HTTP provider understands; other keys are left alone."""

    base_url: str | None = None
    api_key_env: str | None = None


class UpstreamError(msgspec.Struct):
    type: str = ""
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: UpstreamError | str


@dataclass(frozen=True)
class Call:
    """One upstream request. `headers` and `secret` hold the key, so repr() leaves them out."""

    provider: str
    url: str
    model: str
    key_env: str
    body: dict[str, Any]
    headers: dict[str, str] = field(repr=False)
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UpstreamApi:
    """How a provider's streaming API is called: the path below the API root, and the header
    the key goes in, after its prefix (("authorization", "Bearer "))."""

    provider: str
    path: str
    key_header: tuple[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)

    def call(self, target: Target, model: str, body: dict[str, Any]) -> Call:
        """A POST of `body` as JSON asking for an event stream, with the key when there is one."""
        headers = {**self.headers, "content-type": "application/json"}
        headers["accept"] = "text/event-stream"
        if target.key is not None:
            name, prefix = self.key_header
            headers[name] = prefix + target.key
        url, key_env = target.root + self.path, target.key_hint
        return Call(self.provider, url, model, key_env, body, headers=headers, secret=target.key)


def parse_options(options: Mapping[str, Any]) -> HttpOptions:
    if "api_key" in options:
        raise InvalidRequest(
            "options.api_key is not accepted: sessiond never stores API keys. Set the key in "
            "the server's environment and name the variable in options.api_key_env",
            field="options",
        )
    try:
        parsed = msgspec.convert(options, HttpOptions)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid provider options: {exc}", field="options") from exc
    if parsed.base_url is not None and not is_http_url(parsed.base_url):
        raise InvalidRequest(
            f"options.base_url must be an http(s) URL, got {parsed.base_url!r}", field="options"
        )
    if parsed.api_key_env == "":
        raise InvalidRequest("options.api_key_env must not be empty", field="options")
    return parsed


def is_http_url(url: str) -> bool:
    try:  # urlsplit too refuses some hosts (an unclosed or invalid IPv6 bracket)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        parsed = httpx.URL(url)  # what httpx will make of it when sending (hosts must encode…)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return False
    return bool(parsed.host)


class Reader(Protocol):
    """Turns one upstream stream into step events, a `data:` payload at a time."""

    def feed(self, data: str) -> list[StepEvent]: ...

    def end(self) -> list[StepEvent]: ...


async def relay(
    ctx: ProviderContext, call: Call, reader: Reader
) -> AsyncGenerator[StepEvent, None]:
    """POST the call and yield the step events its SSE stream maps to."""
    async with aclosing(post_sse(ctx, call)) as events:
        async for sse in events:
            for event in reader.feed(sse.data):
                yield event
    for event in reader.end():
        yield event


async def post_sse(ctx: ProviderContext, call: Call) -> AsyncGenerator[SseEvent, None]:
    """POST `call` and yield the reply's events, retrying failures that happen before them."""
    attempt = 0
    while True:
        try:
            async with aclosing(_attempt(ctx, call)) as events:
                async for event in events:
                    yield event
            return
        except ProviderError as exc:
            delay = retry_delay(exc, attempt, ctx.settings)
            if delay is None:
                raise
        await asyncio.sleep(delay)
        attempt += 1


def retry_delay(exc: ProviderError, attempt: int, settings: ProviderSettings) -> float | None:
    """Seconds to wait before the next attempt, or None when `exc` is final."""
    if not exc.retryable or attempt >= settings.max_retries:
        return None
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= settings.retry_max_s else None
    # Full jitter: spreads the retries of many runs hit by the same outage.
    return random.uniform(0, min(settings.retry_max_s, settings.retry_base_s * 2**attempt))


async def _attempt(ctx: ProviderContext, call: Call) -> AsyncGenerator[SseEvent, None]:
    started = False
    try:
        async with ctx.http.stream(
            "POST", call.url, json=call.body, headers=call.headers, timeout=_timeout(ctx.settings)
        ) as response:
            if response.status_code != 200:
                raise await _status_error(response, call)
            started = True
            idle = IdleLimit(ctx.settings.idle_timeout_s)
            async for event in sse_events(response.aiter_text()):
                if not event.dispatched or event.event == "ping":
                    idle.check(call)
                    continue
                idle.progress()
                yield event
    except httpx.HTTPError as exc:
        if started:
            raise broken_stream(call, _reason(exc, ctx.settings)) from exc
        raise _unreachable(call, exc) from exc
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ProviderError(f"{call.provider}: the request URL is not usable: {exc}") from exc


async def post_json(ctx: ProviderContext, call: Call) -> bytes:
    """One POST that answers JSON (no stream, no retries): the body, or a ProviderError."""
    try:
        response = await ctx.http.post(
            call.url, json=call.body, headers=call.headers, timeout=_timeout(ctx.settings)
        )
    except httpx.HTTPError as exc:
        raise _unreachable(call, exc) from exc
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ProviderError(f"{call.provider}: the request URL is not usable: {exc}") from exc
    if response.status_code != 200:
        raise await _status_error(response, call)
    content: bytes = response.content
    return content


def _timeout(settings: ProviderSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)


class IdleLimit:
    """An upstream stream must make progress: pings (Anthropic's `event: ping`, the
    `: keep-alive` comments of OpenAI-compatible servers) keep the connection's reads going,
    so httpx's read timeout never fires on them, but they are not an answer. Only an event
    other than a ping is progress; the limit is checked as each ping, comment or block
    without data arrives, so a silent stream is still the read timeout's to catch."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.last = time.monotonic()

    def progress(self) -> None:
        self.last = time.monotonic()

    def check(self, call: Call) -> None:
        if time.monotonic() - self.last > self.limit_s:
            reason = f"no progress for {self.limit_s:g} s, only pings (provider_idle_timeout_s)"
            raise broken_stream(call, reason)


def broken_stream(call: Call, reason: str, status: int = 200) -> ProviderError:
    """A failure after events were yielded: final, because a retry would repeat them."""
    reason = scrub(reason, call.secret)  # it may quote the upstream
    return ProviderError(
        f"provider {call.provider} failed mid-stream (HTTP {status}): {reason}",
        upstream_status=status,
    )


def stream_error(call: Call, data: str) -> ProviderError:
    """An error the upstream reported inside a 200 stream."""
    kind, message = error_detail(data.encode(), call.secret)
    return broken_stream(call, f"{kind or 'error'}: {message}")


def _reason(exc: httpx.HTTPError, settings: ProviderSettings) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return f"no data for {settings.read_timeout_s:g} s (read timeout)"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed ({exc})"
    return _describe(exc)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _unreachable(call: Call, exc: httpx.HTTPError) -> ProviderError:
    return ProviderError(
        f"cannot reach provider {call.provider} at {call.url}: "
        f"{scrub(_describe(exc), call.secret)}",
        retryable=isinstance(exc, _RETRY_ERRORS),
    )


async def _status_error(response: httpx.Response, call: Call) -> ProviderError:
    status = response.status_code
    kind, detail = error_detail(await response.aread(), call.secret)
    return ProviderError(
        f"{_status_message(call, status, detail)} [HTTP {status}{' ' + kind if kind else ''}]",
        retryable=status in RETRY_STATUSES,
        retry_after=retry_after(response.headers),
        upstream_status=status,
        context_too_long=status in (400, 413) and too_long(detail),
    )


# How upstreams say the input is over the model's context window: Anthropic's "prompt is too
# long: N tokens > M maximum", OpenAI's "This model's maximum context length is N tokens" (code
# context_length_exceeded), and the wordings of OpenAI-compatible servers.
_TOO_LONG = re.compile(
    r"prompt is too long|maximum context length|context[_ ]length[_ ]exceeded|"
    r"context window|too many (input )?tokens",
    re.IGNORECASE,
)


def too_long(detail: str) -> bool:
    return _TOO_LONG.search(detail) is not None


def _status_message(call: Call, status: int, detail: str) -> str:
    name = call.provider
    if status == 401 and call.secret is None:
        return f"provider {name} at {call.url} requires an API key: set {call.key_env}"
    if status == 401:
        # Upstream 401 text is left out: OpenAI's quotes part of the key back.
        return f"invalid API key for provider {name} ({call.key_env})"
    if status == 403:
        return f"provider {name} denied access with {call.key_env}: {detail}"
    if status == 404:
        return f"model {call.model!r} not found at provider {name} ({call.url}): {detail}"
    if status == 429:
        return f"provider {name} is rate limiting requests: {detail}"
    if status >= 500:
        return f"provider {name} is unavailable: {detail}"
    return f"provider {name} rejected the request: {detail}"


def error_detail(body: bytes, secret: str | None) -> tuple[str, str]:
    """(error type, message) from an upstream error body, which may not even be JSON."""
    try:
        error = msgspec.json.decode(body, type=_ErrorBody).error
    except msgspec.DecodeError:
        kind, message = "", body.decode(errors="replace").strip() or "(empty body)"
    else:
        kind, message = ("", error) if isinstance(error, str) else (error.type, error.message)
    return scrub(kind, secret)[:_DETAIL_LIMIT], scrub(message, secret)[:_DETAIL_LIMIT]


def excerpt(call: Call, data: str, limit: int = 200) -> str:
    """The start of an upstream payload for an error message: scrubbed, then cut (a key cut
    in two would escape the scrubbing)."""
    return scrub(data, call.secret)[:limit]


def scrub(text: str, secret: str | None) -> str:
    """`text` with every form of `secret` that an upstream might echo masked: as sent, in
    any case, reversed, percent- or hex-encoded, and base64 at any alignment (as inside a
    Basic credential), standard or URL-safe."""
    if not secret:
        return text
    return _masks(secret).sub("***", text)


@functools.lru_cache(maxsize=16)
def _masks(secret: str) -> re.Pattern[str]:
    plain = {secret, secret[::-1], quote(secret, safe=""), secret.encode().hex()}
    encoded = _base64_forms(secret.encode())
    by_length = functools.partial(sorted, key=len, reverse=True)
    exact = "|".join(re.escape(form) for form in by_length(encoded - plain))
    any_case = "|".join(re.escape(form) for form in by_length(plain))
    return re.compile(f"{exact}|(?i:{any_case})" if exact else f"(?i:{any_case})")


def _base64_forms(raw: bytes) -> set[str]:
    """The base64 text of `raw`, whole, and as it reads inside a longer encoded string: per
    alignment, the groups of four characters that encode `raw`'s bytes alone."""
    whole = base64.b64encode(raw).decode()
    forms = {whole, whole.rstrip("=")}
    for offset in range(3):
        text = base64.b64encode(bytes(offset) + raw).decode()
        end = len(text) - (4 if (offset + len(raw)) % 3 else 0)
        inner = text[4 if offset else 0 : end]
        if len(inner) >= 8:
            forms.add(inner)
    return forms | {form.replace("+", "-").replace("/", "_") for form in forms}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if any."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    return seconds if seconds is not None else _seconds_until(value)


def _number(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - time.time())
