"""One exception tree. Each class carries its HTTP status and error type; app.py renders them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    type = "unauthorized"


class Forbidden(ApiError):
    """The caller may not do this: a browser page from a foreign origin, a key without the scope."""

    status = 403
    type = "forbidden"


class NotFound(ApiError):
    status = 404
    type = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    type = "method_not_allowed"


class RequestTimeout(ApiError):
    """The request's headers or body did not arrive in time (server/cli/connections.py)."""

    status = 408
    type = "request_timeout"


class Conflict(ApiError):
    status = 409
    type = "conflict"


class SessionBusy(ApiError):
    status = 409
    type = "session_busy"

    def __init__(self, message: str, run_id: str, retry_after: int = 1) -> None:
        super().__init__(message, run_id=run_id)
        self.headers["Retry-After"] = str(retry_after)


class Archived(ApiError):
    status = 409
    type = "archived"


class PayloadTooLarge(ApiError):
    status = 413
    type = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "unsupported_media_type"


class Unprocessable(ApiError):
    """Well-formed but cannot be done as asked: an Idempotency-Key reused with another body."""

    status = 422
    type = "unprocessable"


class AgentUnusable(Unprocessable):
    """The agent cannot run now (a missing key, a tool the operator has not allowed): the
    operator's or the agent's fault, so no upstream is ever asked."""

    type = "agent_unusable"


class RetryLater(ApiError):
    """Not now, but later: the answer's `Retry-After` says when, in seconds."""

    def __init__(self, message: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.headers["Retry-After"] = str(retry_after)


class RateLimited(RetryLater):
    """Past a key's limit (runs a minute, open streams)."""

    status = 429
    type = "rate_limited"


class InternalError(ApiError):
    status = 500
    type = "internal_error"


class ProviderError(ApiError):
    """The model provider failed: bad key, bad model, upstream outage, a cut stream."""

    status = 502
    type = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        context_too_long: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message, **extra)
        # the upstream refused the input as longer than the model's context window
        self.context_too_long = context_too_long
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class RunLimit(ApiError):
    """A run went over one of its limits (its deadline, a step's output bytes) and ends
    failed. 502 as for the provider's failures: nearly always an upstream that is too slow
    or does not stop."""

    status = 502
    type = "run_limit"


class Unavailable(RetryLater):
    """Not now: shutting down, too many connections."""

    status = 503
    type = "unavailable"


class ShuttingDown(Unavailable):
    pass


class StoreError(ApiError):
    """SQLite failed underneath us (disk full, corrupt file); never shown with its traceback."""

    status = 500
    type = "internal_error"


class ToolError(Exception):
    """A tool could not do what was asked; becomes a tool_result with is_error: true."""


def status_for(kind: str) -> int:
    """The HTTP status of an error kind (e.g. a run's stored error), 500 when unknown."""
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        if cls.type == kind:
            return cls.status
        pending += cls.__subclasses__()
    return 500
