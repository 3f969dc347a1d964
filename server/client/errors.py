"""The client raises the server's own exception tree (server/errors.py): an error answer
becomes the class of its `error.type`, so `except NotFound` means the same against a server
as in-process (LocalClient, where the store and the runner raise those very classes).
Only a failure to reach the server at all is the client's own: `Unreachable`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from server import errors
from server.errors import ApiError


class Unreachable(ApiError):
    """The server could not be reached, or a stream broke off and could not be resumed."""

    status = 0
    type = "unreachable"


class _Body(msgspec.Struct):
    type: str
    message: str


class _Envelope(msgspec.Struct):
    error: _Body


class _Extra(msgspec.Struct):
    error: dict[str, Any]


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_extra = msgspec.json.Decoder(_Extra).decode


def _classes() -> dict[str, type[ApiError]]:
    """Every kind the tree knows, the most general class first for a shared kind
    (`StoreError` and `InternalError` are both `internal_error`)."""
    found: dict[str, type[ApiError]] = {}
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.type, cls)
        pending += cls.__subclasses__()
    return found


_BY_STATUS: dict[int, type[ApiError]] = {
    400: errors.InvalidRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    408: errors.RequestTimeout,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.Unprocessable,
    429: errors.RateLimited,
    502: errors.ProviderError,
    503: errors.Unavailable,
}


def error_of(kind: str, message: str, status: int, extra: Mapping[str, Any]) -> ApiError:
    """The exception for an error the server reported (an answer's, or a run's `error`)."""
    cls = _classes().get(kind) or _BY_STATUS.get(status) or ApiError
    exc = cls.__new__(cls)
    ApiError.__init__(exc, message, **extra)
    exc.status, exc.type = status, kind  # a kind newer than this client keeps its name
    if isinstance(exc, errors.ProviderError):
        exc.retryable, exc.retry_after, exc.upstream_status = False, None, None
    return exc


def from_response(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """An error answer as its exception; a body not of the error shape still raises by its
    status."""
    try:
        envelope = _decode_envelope(body)
        kind, message = envelope.error.type, envelope.error.message
        extra = {k: v for k, v in _decode_extra(body).error.items() if k not in ("type", "message")}
    except (msgspec.DecodeError, msgspec.ValidationError):
        kind = _BY_STATUS.get(status, errors.InternalError).type
        message = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
        extra = {}
    exc = error_of(kind, message, status, extra)
    if "retry-after" in headers:
        exc.headers["Retry-After"] = headers["retry-after"]
    return exc
