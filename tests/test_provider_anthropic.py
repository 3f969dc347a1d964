from __future__ import annotations

import asyncio
import json

import httpx
import msgspec
import pytest

from server.errors import AgentUnusable
from server.events import (
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StepInfo,
    StopInfo,
    TextDelta,
)
from server.models import TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock, Turn, Usage
from server.providers.anthropic import AnthropicProvider
from server.providers.base import Access
from tests.upstream import (
    ANTHROPIC_PING,
    Reply,
    Upstream,
    anthropic_sse,
    collect,
    context,
    json_error,
    request,
    split,
)

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-0123456789"
ENV = {"ANTHROPIC_API_KEY": KEY}

# The documented example stream, byte for byte, with the tool input completed.
WIRE = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"Paris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501

WIRE_EVENTS = [
    MessageStart(
        StepInfo("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5-20250929", usage=Usage(472))
    ),
    ContentBlockStart(0, TextBlock("")),
    TextDelta("Okay", 0),
    ContentBlockStop(0),
    ContentBlockStart(1, ToolUseBlock("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {})),
    InputJsonDelta('{"location":', 1),
    InputJsonDelta(' "Paris"}', 1),
    ContentBlockStop(1),
    MessageDelta(StopInfo("tool_use"), Usage(472, 89)),
    MessageStop(),
]


def start(input_tokens: int = 10) -> dict:
    usage = {"input_tokens": input_tokens, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x"}
    return {"type": "message_start", "message": {**message, "content": [], "usage": usage}}


def text_block(index: int, *pieces: str) -> list[dict]:
    deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    return block(index, {"type": "text", "text": ""}, deltas)


def tool_block(index: int, call_id: str, name: str, *fragments: str) -> list[dict]:
    deltas = [{"type": "input_json_delta", "partial_json": f} for f in ("", *fragments)]
    return block(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}, deltas)


def block(index: int, content_block: dict, deltas: list[dict]) -> list[dict]:
    return [
        {"type": "content_block_start", "index": index, "content_block": content_block},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def finish(stop_reason: str = "end_turn", output_tokens: int = 5) -> list[dict]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    usage = {"output_tokens": output_tokens}
    return [{"type": "message_delta", "delta": delta, "usage": usage}, {"type": "message_stop"}]


def hello() -> list[bytes]:
    return anthropic_sse(start(), *text_block(0, "Hel", "lo"), *finish())


HELLO_EVENTS = [
    MessageStart(StepInfo("msg_1", "claude-x", usage=Usage(10))),
    ContentBlockStart(0, TextBlock("")),
    TextDelta("Hel", 0),
    TextDelta("lo", 0),
    ContentBlockStop(0),
    MessageDelta(StopInfo("end_turn"), Usage(10, 5)),
    MessageStop(),
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def upstream():
    async with Upstream() as server:
        yield server


@pytest.fixture
async def http():
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def make(upstream, http, env=ENV, options=None, **settings):
    """The provider for an agent whose base_url is the double, the operator's endpoint."""
    return AnthropicProvider(
        {"base_url": upstream.url, **(options or {})},
        allowed(context(http, env, **settings), upstream.url),
    )


def allowed(ctx, url, **access):
    return msgspec.structs.replace(ctx, access=Access({"anthropic": [url]}, **access))


async def test_documented_stream_maps_one_to_one(upstream, http):
    upstream.enqueue(Reply(chunks=split(WIRE, 7)))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events == WIRE_EVENTS


async def test_request_carries_headers_and_minimal_body(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    turns = [Turn("user", [TextBlock("hi")])]
    await collect(make(upstream, http), request(messages=turns))
    [seen] = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["x-api-key"] == KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers
    assert seen.body == {
        "model": "test-model",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": True,
    }


async def test_request_body_carries_history_tools_and_system(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    turns = [
        Turn("user", [TextBlock("weather in Paris and Rome?")]),
        Turn(
            "assistant",
            [
                TextBlock(""),
                TextBlock("Checking."),
                ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"}),
                ToolUseBlock("toolu_2", "get_weather", {"city": "Rome"}),
            ],
        ),
        Turn(
            "user",
            [
                TextBlock("be quick"),
                ToolResultBlock("toolu_1", "18C"),
                ToolResultBlock("toolu_2", "no such city", is_error=True),
            ],
        ),
    ]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [ToolSpec("get_weather", "Current weather", schema), ToolSpec("now", "", {})]
    req = request(system="Be brief.", messages=turns, tools=tools, max_tokens=100, temperature=0.2)
    await collect(make(upstream, http), req)
    assert upstream.requests[0].body == {
        "model": "test-model",
        "max_tokens": 100,
        "stream": True,
        "system": "Be brief.",
        "temperature": 0.2,
        "tools": [
            {"name": "get_weather", "description": "Current weather", "input_schema": schema},
            {"name": "now", "input_schema": {}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "18C",
                        "is_error": False,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "no such city",
                        "is_error": True,
                    },
                    {"type": "text", "text": "be quick"},
                ],
            },
        ],
    }


async def test_tool_input_split_into_many_fragments(upstream, http):
    payload = json.dumps({"path": "src/main.py", "lines": [1, 2, 3], "note": 'é"quoted"'})
    fragments = [payload[i : i + 3] for i in range(0, len(payload), 3)]
    sse = anthropic_sse(start(), *tool_block(0, "toolu_9", "read", *fragments), *finish("tool_use"))
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events[1] == ContentBlockStart(0, ToolUseBlock("toolu_9", "read", {}))
    deltas = [e for e in events if isinstance(e, InputJsonDelta)]
    assert [d.partial_json for d in deltas] == fragments
    assert {d.index for d in deltas} == {0}
    assert json.loads("".join(d.partial_json for d in deltas)) == json.loads(payload)
    assert events[-2:] == [MessageDelta(StopInfo("tool_use"), Usage(10, 5)), MessageStop()]


async def test_tool_call_without_input_fragments_gets_empty_object(upstream, http):
    sse = anthropic_sse(start(), *tool_block(0, "toolu_1", "now"), *finish("tool_use"))
    upstream.enqueue(Reply(chunks=sse))
    events, _ = await collect(make(upstream, http), request())
    assert events[1:4] == [
        ContentBlockStart(0, ToolUseBlock("toolu_1", "now", {})),
        InputJsonDelta("{}", 0),
        ContentBlockStop(0),
    ]


async def test_thinking_pings_and_unknown_events_are_skipped_and_blocks_renumbered(upstream, http):
    thinking = block(
        0,
        {"type": "thinking", "thinking": ""},
        [
            {"type": "thinking_delta", "thinking": "hmm"},
            {"type": "signature_delta", "signature": "x"},
        ],
    )
    sse = anthropic_sse(
        start(),
        {"type": "ping"},
        *thinking,
        {"type": "brand_new_event", "whatever": [1]},
        *text_block(1, "Hi"),
        *tool_block(2, "toolu_1", "now", "{}"),
        *finish("tool_use"),
    )
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events[1:] == [
        ContentBlockStart(0, TextBlock("")),
        TextDelta("Hi", 0),
        ContentBlockStop(0),
        ContentBlockStart(1, ToolUseBlock("toolu_1", "now", {})),
        InputJsonDelta("{}", 1),
        ContentBlockStop(1),
        MessageDelta(StopInfo("tool_use"), Usage(10, 5)),
        MessageStop(),
    ]


@pytest.mark.parametrize(
    "stop_reason",
    [
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    ],
)
async def test_stop_reason_passes_through_verbatim(upstream, http, stop_reason):
    upstream.enqueue(
        Reply(chunks=anthropic_sse(start(), *text_block(0, "x"), *finish(stop_reason)))
    )
    events, _ = await collect(make(upstream, http), request())
    assert events[-2] == MessageDelta(StopInfo(stop_reason), Usage(10, 5))


async def test_cached_input_counts_toward_input_usage(upstream, http):
    first = start(3)
    first["message"]["usage"] |= {"cache_read_input_tokens": 100, "cache_creation_input_tokens": 7}
    upstream.enqueue(Reply(chunks=anthropic_sse(first, *text_block(0, "x"), *finish())))
    events, _ = await collect(make(upstream, http), request())
    assert events[0].message.usage == Usage(110)
    assert events[-2].usage == Usage(110, 5)


async def test_error_event_inside_200_stream(upstream, http):
    error_event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    sse = anthropic_sse(start(), *text_block(0, "Hel")[:2], error_event)
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert events == [*HELLO_EVENTS[:2], TextDelta("Hel", 0)]
    assert "overloaded_error" in error.message and "Overloaded" in error.message
    assert (error.upstream_status, error.retryable) == (200, False)
    assert len(upstream.requests) == 1


async def test_connection_cut_mid_stream(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:3], cut=True))
    events, error = await collect(make(upstream, http), request())
    assert events == HELLO_EVENTS[:3]
    assert "mid-stream (HTTP 200)" in error.message and "connection closed" in error.message
    assert (error.upstream_status, error.retryable) == (200, False)
    assert len(upstream.requests) == 1


async def test_stream_ending_before_message_stop_is_an_error(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:-1]))
    events, error = await collect(make(upstream, http), request())
    assert events == HELLO_EVENTS[:-1]
    assert "ended before message_stop" in error.message


async def test_read_timeout_between_chunks(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:2], hold=True))
    events, error = await collect(make(upstream, http, read_timeout_s=0.2), request())
    assert events == HELLO_EVENTS[:2]
    assert "read timeout" in error.message and error.retryable is False


async def test_pings_alone_are_not_progress(upstream, http):
    """Pings keep the reads going (no read timeout) but not the step: the idle limit ends it."""
    upstream.enqueue(Reply(chunks=anthropic_sse(start()), forever=ANTHROPIC_PING, delay_s=0.01))
    provider = make(upstream, http, idle_timeout_s=0.2)
    events, error = await asyncio.wait_for(collect(provider, request()), 30)
    assert events == HELLO_EVENTS[:1]
    assert "no progress for 0.2 s, only pings (provider_idle_timeout_s)" in error.message
    assert (error.upstream_status, error.retryable) == (200, False)
    await asyncio.wait_for(upstream.requests[0].closed.wait(), 10)  # the stream is closed
    assert len(upstream.requests) == 1


async def test_pings_between_events_within_the_idle_limit_are_harmless(upstream, http):
    frames = hello()
    with_pings = [piece for frame in frames for piece in (ANTHROPIC_PING, frame)]
    upstream.enqueue(Reply(chunks=with_pings, delay_s=0.01))
    events, error = await collect(make(upstream, http, idle_timeout_s=5.0), request())
    assert error is None and events == HELLO_EVENTS


async def test_429_is_retried_then_succeeds(upstream, http):
    upstream.enqueue(
        json_error(429, "rate_limit_error", "slow down", **{"retry-after": "0"}),
        Reply(chunks=hello()),
    )
    events, error = await collect(make(upstream, http), request())
    assert error is None and events == HELLO_EVENTS
    assert len(upstream.requests) == 2
    assert upstream.requests[0].body == upstream.requests[1].body


async def test_retry_after_is_honoured(upstream, http):
    upstream.enqueue(
        json_error(429, "rate_limit_error", "slow down", **{"retry-after": "0.3"}),
        Reply(chunks=hello()),
    )
    await collect(make(upstream, http, retry_base_s=0.001), request())
    first, second = upstream.requests
    assert second.at - first.at >= 0.3


async def test_retry_after_beyond_the_cap_is_not_waited_out(upstream, http):
    upstream.enqueue(json_error(429, "rate_limit_error", "later", **{"retry-after": "30"}))
    _, error = await collect(make(upstream, http, retry_max_s=1.0), request())
    assert len(upstream.requests) == 1
    assert (error.upstream_status, error.retry_after, error.retryable) == (429, 30.0, True)


async def test_overload_is_retried_until_max_retries(upstream, http):
    upstream.enqueue(*(json_error(529, "overloaded_error", "Overloaded") for _ in range(3)))
    _, error = await collect(make(upstream, http, max_retries=2), request())
    assert len(upstream.requests) == 3
    assert error.upstream_status == 529
    assert (
        error.message == "provider anthropic is unavailable: Overloaded [HTTP 529 overloaded_error]"
    )


async def test_hang_up_before_reply_is_retried(upstream, http):
    upstream.enqueue(Reply(status=0), Reply(chunks=hello()))
    events, error = await collect(make(upstream, http), request())
    assert error is None and events == HELLO_EVENTS
    assert len(upstream.requests) == 2


async def test_unreachable_upstream_is_retried_then_reported(http):
    async with Upstream() as gone:
        url = gone.url
    ctx = allowed(context(http, ENV, max_retries=1), url)
    provider = AnthropicProvider({"base_url": url}, ctx)
    _, error = await collect(provider, request())
    assert error.message.startswith(f"cannot reach provider anthropic at {url}/v1/messages")
    assert error.retryable is True


async def test_401_is_not_retried_and_names_the_key_variable(upstream, http):
    upstream.enqueue(json_error(401, "authentication_error", f"invalid x-api-key {KEY}"))
    _, error = await collect(make(upstream, http), request())
    assert len(upstream.requests) == 1
    assert error.message == (
        "invalid API key for provider anthropic (ANTHROPIC_API_KEY) [HTTP 401 authentication_error]"
    )
    assert error.retryable is False and error.upstream_status == 401


async def test_404_names_the_model(upstream, http):
    upstream.enqueue(json_error(404, "not_found_error", "model: claude-nope"))
    _, error = await collect(make(upstream, http), request(model="claude-nope"))
    assert len(upstream.requests) == 1
    assert "model 'claude-nope' not found at provider anthropic" in error.message
    assert error.message.endswith("model: claude-nope [HTTP 404 not_found_error]")


async def test_upstream_text_never_repeats_the_key(upstream, http):
    upstream.enqueue(json_error(400, "invalid_request_error", f"bad header {KEY}"))
    _, error = await collect(make(upstream, http), request())
    assert KEY not in error.message
    assert error.message == (
        "provider anthropic rejected the request: bad header *** [HTTP 400 invalid_request_error]"
    )


async def test_missing_key_fails_before_any_request(upstream, http):
    with pytest.raises(AgentUnusable) as caught:
        make(upstream, http, env={})
    assert caught.value.message == "no API key for provider anthropic: set ANTHROPIC_API_KEY"
    assert upstream.requests == []


async def test_api_key_env_names_the_variable(upstream, http):
    """A variable the operator lets agents name (`--agent-key-env TEAM_*`)."""
    upstream.enqueue(Reply(chunks=hello()))
    ctx = context(http, {**ENV, "TEAM_KEY": "k2"})
    ctx = allowed(ctx, upstream.url, agent_key_env=["TEAM_*"])
    provider = AnthropicProvider({"base_url": upstream.url, "api_key_env": "TEAM_KEY"}, ctx)
    await collect(provider, request())
    assert upstream.requests[0].headers["x-api-key"] == "k2"


async def test_cancelling_the_consumer_closes_the_upstream_connection(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:3], hold=True))
    provider = make(upstream, http)
    got_text = asyncio.Event()

    async def consume():
        async for event in provider.stream(request()):
            if isinstance(event, TextDelta):
                got_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_text.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the stream is held open and nothing reads it any more: only the cancel closes it
    await asyncio.wait_for(upstream.requests[0].closed.wait(), 30)
