"""/keys: API keys, for admin keys (and `sessiond keys …` on the server's machine). A new key
is shown once, in the answer that makes it; only its hash is kept."""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.request import decode_body, json_response, page_params, store, tenant_of
from server.errors import InvalidRequest
from server.ids import new_ulid, now
from server.models import DEFAULT_TENANT, TENANT_PATTERN, ApiKey, KeyScope
from server.store import KeyStore

PREFIX = "sk-sd-"
TENANT = re.compile(TENANT_PATTERN.strip("^$"))


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
    tenant: str


create_decoder = msgspec.json.Decoder(CreateKey)


def new_secret() -> str:
    """A new key: 32 random bytes (256 bits), URL-safe, prefixed so that it can be told apart
    (by people, and by secret scanners) from other services' keys."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT.fullmatch(tenant):
        raise InvalidRequest(
            f"tenant {tenant[:80]!r} must be 1 to 64 of A-Z a-z 0-9 . _ -, starting with a "
            "letter or a digit",
            field="tenant",
        )
    return tenant


async def issue(keys: KeyStore, name: str, scope: KeyScope, tenant: str = DEFAULT_TENANT) -> NewKey:
    """Make and store a new key; the answer holds it, and nothing else ever will."""
    key = new_secret()
    made = ApiKey(new_ulid(), name, scope, now(), tenant=check_tenant(tenant))
    record = await keys.create(made, digest(key))
    return NewKey(
        key=key,
        id=record.id,
        name=record.name,
        scope=record.scope,
        created_at=record.created_at,
        tenant=record.tenant,
    )


async def create_key(request: Request) -> Response:
    """A key made over HTTP belongs to the tenant of the admin key that makes it."""
    body = await decode_body(request, create_decoder)
    made = await issue(store(request).keys, body.name, body.scope, tenant_of(request))
    return json_response(made, 201, {"Location": f"/keys/{made.id}", "Cache-Control": "no-store"})


async def list_keys(request: Request) -> Response:
    limit, cursor = page_params(request)
    return json_response(await store(request).keys.page(tenant_of(request), limit, cursor))


async def revoke_key(request: Request) -> Response:
    await store(request).keys.revoke(request.path_params["key_id"], now(), tenant_of(request))
    return Response(status_code=204)


routes = [
    Route("/keys", create_key, methods=["POST"]),
    Route("/keys", list_keys, methods=["GET"]),
    Route("/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
