"""Decoding at the edge: bodies (size-capped, typed, unknown fields refused), query
parameters and path keys. Anything wrong is an InvalidRequest naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from server.errors import InvalidRequest, PayloadTooLarge
from server.models import DEFAULT_TENANT, ApiKey, SessionRecord
from server.runs.runner import Runner
from server.store import Store
from server.store.pages import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_REQUIRED = re.compile(r"missing required field `([^`]*)`")
_encoder = msgspec.json.Encoder()


def field_of(message: str) -> str | None:
    for pattern in (_UNKNOWN, _REQUIRED):
        found = pattern.search(message)
        if found:
            path = _PATH.search(message)
            prefix = path.group(1) if path and path.group(1) else ""
            return f"{prefix}.{found.group(1)}" if prefix else found.group(1)
    path = _PATH.search(message)
    return path.group(1) or None if path else None


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, decoder: msgspec.json.Decoder[T]) -> T:
    # The body is read as JSON whatever its Content-Type: `curl -d` sends form-encoded.
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if not body.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        fixed = _whole_floats(body, decoder, exc)
        if fixed is not None:
            return fixed
        raise InvalidRequest(f"invalid request body: {exc}", field=field_of(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest("the JSON body is nested too deeply") from exc


_FLOAT_FOR_INT = re.compile(r"Expected `int[^`]*`, got `float` - at `\$((?:\.[A-Za-z_]\w*)+)`")


def _whole_floats(body: bytes, decoder: msgspec.json.Decoder[T], exc: Exception) -> T | None:
    """JSON has one number type: `16.0` is a valid integer (JSON Schema says so too). Where a
    field wants an int and got a whole float, take it as that int; nothing else changes."""
    data: Any = None
    for _ in range(8):
        found = _FLOAT_FOR_INT.search(str(exc))
        if found is None:
            return None
        data = msgspec.json.decode(body) if data is None else data
        *parents, leaf = found.group(1).lstrip(".").split(".")
        node = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(leaf) if isinstance(node, dict) else None
        if not isinstance(value, float) or not value.is_integer():
            return None
        node[leaf] = int(value)
        try:
            result: T = msgspec.convert(data, decoder.type, strict=True)
            return result
        except msgspec.ValidationError as again:
            exc = again
    return None


_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_SEQ = 2**62


def parse_count(raw: str, name: str, low: int = 0, high: int = MAX_SEQ) -> int:
    """A whole number written in ASCII digits, within [low, high]; else a 400 naming it."""
    if not _DIGITS.fullmatch(raw):
        if raw.startswith("-") and _DIGITS.fullmatch(raw[1:]):
            raise InvalidRequest(f"{name} must be between {low} and {high}", field=name)
        raise InvalidRequest(f"{name} must be a whole number, not {raw[:40]!r}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", field=name)
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return parse_count(raw, name, low, high)


def page_params(request: Request) -> tuple[int, str | None]:
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return limit, request.query_params.get("cursor") or None


def query_choice(request: Request, name: str, choices: tuple[str, ...], default: str | None) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}", field=name)
    return raw


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(value), status, headers, media_type="application/json")


def store(request: Request) -> Store:
    result: Store = request.app.state.store
    return result


def runner(request: Request) -> Runner:
    result: Runner = request.app.state.runner
    return result


def tenant_of(request: Request) -> str:
    """The tenant the request acts for: its key's (api/auth.py left the key in the request's
    state), or without auth the one tenant there is."""
    key: ApiKey | None = request.scope.get("state", {}).get("key")
    return DEFAULT_TENANT if key is None else key.tenant


async def session_of(request: Request, key: str | None = None) -> SessionRecord:
    """The session the path (or `key`) names, by id or name, among the request's tenant's:
    another tenant's is not found, exactly as one that does not exist."""
    found = key if key is not None else request.path_params["session_id"]
    return await store(request).sessions.get(found, tenant_of(request))
