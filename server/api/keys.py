"""/keys: API keys, for admin keys (and `sessiond keys …` on the server's machine). A new key
is shown once, in the answer that makes it; only its hash is kept."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.request import decode_body, json_response, page_params, store
from server.ids import new_ulid, now
from server.models import ApiKey, KeyScope
from server.store import KeyStore

PREFIX = "sk-sd-"


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scope: KeyScope = "write"


class NewKey(msgspec.Struct):
    """The key, shown this once, and its record."""

    key: str
    id: str
    name: str
    scope: KeyScope
    created_at: str


create_decoder = msgspec.json.Decoder(CreateKey)


def new_secret() -> str:
    """A new key: 32 random bytes (256 bits), URL-safe, prefixed so that it can be told apart
    (by people, and by secret scanners) from other services' keys."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def issue(keys: KeyStore, name: str, scope: KeyScope) -> NewKey:
    """Make and store a new key; the answer holds it, and nothing else ever will."""
    key = new_secret()
    record = await keys.create(ApiKey(new_ulid(), name, scope, now()), digest(key))
    return NewKey(key, record.id, record.name, record.scope, record.created_at)


async def create_key(request: Request) -> Response:
    body = await decode_body(request, create_decoder)
    made = await issue(store(request).keys, body.name, body.scope)
    return json_response(made, 201, {"Location": f"/keys/{made.id}", "Cache-Control": "no-store"})


async def list_keys(request: Request) -> Response:
    limit, cursor = page_params(request)
    return json_response(await store(request).keys.page(limit, cursor))


async def revoke_key(request: Request) -> Response:
    await store(request).keys.revoke(request.path_params["key_id"], now())
    return Response(status_code=204)


routes = [
    Route("/keys", create_key, methods=["POST"]),
    Route("/keys", list_keys, methods=["GET"]),
    Route("/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
