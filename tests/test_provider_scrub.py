"""Upstream text that echoes the key back, in any form an upstream might, is scrubbed before
it becomes an error message (which is stored with the run and shown to clients)."""

from __future__ import annotations

import base64
import json

import httpx
import msgspec
import pytest

from server.providers.anthropic import AnthropicProvider
from server.providers.base import Access
from server.providers.http import scrub
from server.providers.openai import OpenAIProvider
from tests.upstream import Reply, Upstream, collect, context, json_error, request

pytestmark = pytest.mark.anyio

KEY = "sk-ant-api03-Zx9_Qw7-abcDEF0123456789ghIJ"
B64 = base64.b64encode(KEY.encode()).decode()
BASIC = base64.b64encode(f"user:{KEY}".encode()).decode()  # the key at another alignment
FORMS = {
    "as sent": KEY,
    "upper-cased": KEY.upper(),
    "lower-cased": KEY.lower(),
    "reversed": KEY[::-1],
    "base64": B64,
    "base64, unpadded": B64.rstrip("="),
    "base64, URL-safe": base64.urlsafe_b64encode(KEY.encode()).decode(),
    "hex": KEY.encode().hex().upper(),
    "bearer": f"Bearer {KEY}",
}


def exposed(message: str) -> list[str]:
    """Which forms of the key show in `message`, whole or by any 10 characters of them."""
    found = []
    for name, form in {**FORMS, "basic": BASIC[8:-4]}.items():
        pieces = {form[i : i + 10] for i in range(len(form) - 9)}
        if any(piece.lower() in message.lower() for piece in pieces):
            found.append(name)
    return found


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream():
    async with Upstream() as server:
        yield server


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def allowed(ctx, provider: str, url: str):
    return msgspec.structs.replace(ctx, access=Access({provider: [url]}))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_the_key_is_scrubbed(form: str) -> None:
    text = f"header was {FORMS[form]}, try again"
    assert exposed(scrub(text, KEY)) == []
    assert scrub(text, KEY).endswith(", try again")


def test_a_key_inside_a_basic_credential_is_scrubbed() -> None:
    scrubbed = scrub(f"Authorization: Basic {BASIC}", KEY)
    assert exposed(scrubbed) == [] and "***" in scrubbed


def test_text_without_the_key_is_left_alone() -> None:
    text = "model: claude-nope not found (see https://docs.example.com/errors#404)"
    assert scrub(text, KEY) == text and scrub(text, None) == text


async def test_an_error_reply_echoing_the_key_in_many_forms(upstream, http) -> None:
    echoed = " | ".join(FORMS.values()) + f" | Basic {BASIC}"
    upstream.enqueue(json_error(400, "invalid_request_error", f"bad headers: {echoed}"))
    ctx = allowed(context(http, {"ANTHROPIC_API_KEY": KEY}), "anthropic", upstream.url)
    _, error = await collect(AnthropicProvider({"base_url": upstream.url}, ctx), request())
    assert error.message.startswith("provider anthropic rejected the request: bad headers: ***")
    assert exposed(error.message) == []


async def test_an_unreadable_chunk_with_the_key_across_the_excerpts_end(upstream, http) -> None:
    """The excerpt of an unreadable chunk is cut at 200 characters: the cut must not leave
    a piece of the key that the scrubbing no longer recognises."""
    data = "{" + "x" * (200 - len(KEY) // 2 - 1) + KEY[::-1].upper()
    upstream.enqueue(Reply(200, [f"data: {data}\n\n".encode()]))
    ctx = allowed(context(http, {"OPENAI_API_KEY": KEY}), "openai", f"{upstream.url}/v1")
    _, error = await collect(OpenAIProvider({"base_url": f"{upstream.url}/v1"}, ctx), request())
    assert "unreadable chunk" in error.message
    assert exposed(error.message) == []


async def test_an_error_event_in_the_stream_echoing_the_key(upstream, http) -> None:
    event = {"type": "error", "error": {"type": "overloaded_error", "message": B64}}
    upstream.enqueue(Reply(200, [f"event: error\ndata: {json.dumps(event)}\n\n".encode()]))
    ctx = allowed(context(http, {"ANTHROPIC_API_KEY": KEY}), "anthropic", upstream.url)
    _, error = await collect(AnthropicProvider({"base_url": upstream.url}, ctx), request())
    assert error.message.endswith("overloaded_error: ***")
