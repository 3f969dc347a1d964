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
from server.providers.base import Access
from server.providers.openai import OpenAIProvider
from tests.upstream import (
    OPENAI_KEEP_ALIVE,
    Reply,
    Upstream,
    collect,
    context,
    openai_sse,
    request,
    split,
)

pytestmark = pytest.mark.anyio

KEY = "sk-proj-test-0123456789"
ENV = {"OPENAI_API_KEY": KEY}
CALL_ID = "call_DdmO9pD3xa9XTPNJ32zg2hcA"

# The documented example chunks, byte for byte, then the include_usage chunk.
WIRE = b"""data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}

data: [DONE]

"""  # noqa: E501

WIRE_EVENTS = [
    MessageStart(StepInfo("chatcmpl-123", "gpt-4o-mini", usage=Usage(0))),
    ContentBlockStart(0, TextBlock("")),
    TextDelta("Hello", 0),
    ContentBlockStop(0),
    MessageDelta(StopInfo("end_turn"), Usage(9, 12)),
    MessageStop(),
]


def chunk(delta: dict | None = None, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [choice],
        "usage": None,
    }


def usage(prompt: int = 9, completion: int = 12) -> dict:
    counts = {"prompt_tokens": prompt, "completion_tokens": completion}
    return {**chunk(), "choices": [], "usage": {**counts, "total_tokens": prompt + completion}}


def call(index: int, call_id: str | None = None, name: str | None = None, args: str = "") -> dict:
    fragment: dict = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        fragment |= {"id": call_id, "type": "function"}
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def hello() -> list[bytes]:
    return openai_sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk(finish_reason="stop"),
        usage(),
    )


HELLO_EVENTS = [
    MessageStart(StepInfo("chatcmpl-1", "gpt-4o-mini", usage=Usage(0))),
    ContentBlockStart(0, TextBlock("")),
    TextDelta("Hel", 0),
    TextDelta("lo", 0),
    ContentBlockStop(0),
    MessageDelta(StopInfo("end_turn"), Usage(9, 12)),
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
    return OpenAIProvider(
        {"base_url": f"{upstream.url}/v1", **(options or {})},
        allowed(context(http, env, **settings), f"{upstream.url}/v1"),
    )


def allowed(ctx, url, **access):
    return msgspec.structs.replace(ctx, access=Access({"openai": [url]}, **access))


async def test_documented_stream_is_normalised(upstream, http):
    upstream.enqueue(Reply(chunks=split(WIRE, 11)))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events == WIRE_EVENTS


async def test_crlf_framing_split_anywhere_is_read(upstream, http):
    upstream.enqueue(Reply(chunks=split(WIRE.replace(b"\n", b"\r\n"), 5)))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events == WIRE_EVENTS


@pytest.mark.parametrize("size", [2, 11])
async def test_a_byte_order_mark_opening_the_stream_is_ignored(upstream, http, size):
    """The mark is no part of the first line (here the one that carries "Hel")."""
    wire = b"\xef\xbb\xbf" + b"".join(hello()[1:])
    upstream.enqueue(Reply(chunks=split(wire, size)))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events == HELLO_EVENTS


async def test_request_carries_bearer_key_and_minimal_body(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    await collect(make(upstream, http), request(messages=[Turn("user", [TextBlock("hi")])]))
    [seen] = upstream.requests
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_request_body_carries_history_tools_and_system(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    turns = [
        Turn("user", [TextBlock("weather in"), TextBlock("Paris and Rome?")]),
        Turn(
            "assistant",
            [
                TextBlock("Checking."),
                ToolUseBlock("call_1", "get_weather", {"city": "Paris"}),
                ToolUseBlock("call_2", "get_weather", {"city": "Rome"}),
            ],
        ),
        Turn(
            "user",
            [
                ToolResultBlock("call_1", "18C"),
                ToolResultBlock("call_2", "no such city", is_error=True),
            ],
        ),
        Turn("assistant", [ToolUseBlock("call_3", "now", {})]),
        Turn("user", [ToolResultBlock("call_3", "noon"), TextBlock("thanks")]),
    ]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [ToolSpec("get_weather", "Current weather", schema)]
    req = request(system="Be brief.", messages=turns, tools=tools, max_tokens=100, temperature=0)
    await collect(make(upstream, http), req)

    def tool_call(call_id: str, name: str, arguments: str) -> dict:
        function = {"name": name, "arguments": arguments}
        return {"id": call_id, "type": "function", "function": function}

    assert upstream.requests[0].body == {
        "model": "test-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 100,
        "temperature": 0,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": schema,
                },
            }
        ],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather in\nParis and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    tool_call("call_1", "get_weather", '{"city":"Paris"}'),
                    tool_call("call_2", "get_weather", '{"city":"Rome"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such city"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [tool_call("call_3", "now", "{}")],
            },
            {"role": "tool", "tool_call_id": "call_3", "content": "noon"},
            {"role": "user", "content": "thanks"},
        ],
    }


async def test_documented_tool_call_fragments(upstream, http):
    sse = openai_sse(
        call(0, CALL_ID, "get_weather"),
        call(0, args='{"'),
        call(0, args="location"),
        call(0, args='":"Paris, France"}'),
        chunk(finish_reason="tool_calls"),
        usage(),
    )
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events[1:] == [
        ContentBlockStart(0, ToolUseBlock(CALL_ID, "get_weather", {})),
        InputJsonDelta('{"', 0),
        InputJsonDelta("location", 0),
        InputJsonDelta('":"Paris, France"}', 0),
        ContentBlockStop(0),
        MessageDelta(StopInfo("tool_use"), Usage(9, 12)),
        MessageStop(),
    ]


async def test_arguments_split_into_many_fragments(upstream, http):
    payload = json.dumps({"path": "src/main.py", "lines": [1, 2, 3], "note": 'é"quoted"'})
    pieces = [payload[i : i + 2] for i in range(0, len(payload), 2)]
    sse = openai_sse(
        call(0, "call_1", "read"),
        *(call(0, args=p) for p in pieces),
        chunk(finish_reason="tool_calls"),
    )
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    deltas = [e for e in events if isinstance(e, InputJsonDelta)]
    assert [d.partial_json for d in deltas] == pieces
    assert json.loads("".join(d.partial_json for d in deltas)) == json.loads(payload)


async def test_parallel_tool_calls_interleaved_after_text(upstream, http):
    sse = openai_sse(
        chunk({"role": "assistant", "content": "Let me look."}),
        call(0, "call_a", "get_weather"),
        call(1, "call_b", "get_time"),
        call(0, args='{"city":'),
        call(1, args='{"tz":'),
        call(1, args='"CET"}'),
        call(0, args='"Paris"}'),
        chunk(finish_reason="tool_calls"),
        usage(20, 30),
    )
    upstream.enqueue(Reply(chunks=sse))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events[1:] == [
        ContentBlockStart(0, TextBlock("")),
        TextDelta("Let me look.", 0),
        ContentBlockStart(1, ToolUseBlock("call_a", "get_weather", {})),
        ContentBlockStart(2, ToolUseBlock("call_b", "get_time", {})),
        InputJsonDelta('{"city":', 1),
        InputJsonDelta('{"tz":', 2),
        InputJsonDelta('"CET"}', 2),
        InputJsonDelta('"Paris"}', 1),
        ContentBlockStop(0),
        ContentBlockStop(1),
        ContentBlockStop(2),
        MessageDelta(StopInfo("tool_use"), Usage(20, 30)),
        MessageStop(),
    ]


async def test_parallel_calls_in_one_chunk(upstream, http):
    both = chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c0",
                    "type": "function",
                    "function": {"name": "a", "arguments": "{}"},
                },
                {
                    "index": 1,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "b", "arguments": ""},
                },
            ]
        }
    )
    upstream.enqueue(Reply(chunks=openai_sse(both, chunk(finish_reason="tool_calls"))))
    events, _ = await collect(make(upstream, http), request())
    assert events[1:7] == [
        ContentBlockStart(0, ToolUseBlock("c0", "a", {})),
        InputJsonDelta("{}", 0),
        ContentBlockStart(1, ToolUseBlock("c1", "b", {})),
        ContentBlockStop(0),
        InputJsonDelta("{}", 1),  # no argument fragments at all: an empty object
        ContentBlockStop(1),
    ]


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("tool_calls", "tool_use"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("something_new", "something_new"),
    ],
)
async def test_finish_reason_maps_to_stop_reason(upstream, http, finish_reason, stop_reason):
    sse = openai_sse(chunk({"content": "x"}), chunk(finish_reason=finish_reason), usage())
    upstream.enqueue(Reply(chunks=sse))
    events, _ = await collect(make(upstream, http), request())
    assert events[-2] == MessageDelta(StopInfo(stop_reason), Usage(9, 12))


async def test_missing_usage_chunk_estimates_output_from_deltas(upstream, http):
    sse = openai_sse(chunk({"content": "a"}), chunk({"content": "b"}), chunk(finish_reason="stop"))
    upstream.enqueue(Reply(chunks=sse))
    events, _ = await collect(make(upstream, http), request())
    assert events[-2] == MessageDelta(StopInfo("end_turn"), Usage(0, 2))


async def test_done_without_finish_reason_closes_blocks(upstream, http):
    upstream.enqueue(Reply(chunks=openai_sse(call(0, "c0", "now"))))
    events, error = await collect(make(upstream, http), request())
    assert error is None
    assert events[1:] == [
        ContentBlockStart(0, ToolUseBlock("c0", "now", {})),
        InputJsonDelta("{}", 0),
        ContentBlockStop(0),
        MessageDelta(StopInfo("tool_use"), Usage(0, 0)),
        MessageStop(),
    ]


async def test_body_ending_after_finish_reason_without_done_is_accepted(upstream, http):
    upstream.enqueue(Reply(chunks=[*hello()[:-1], openai_sse(usage())[0]]))
    events, error = await collect(make(upstream, http), request())
    assert error is None and events == HELLO_EVENTS


async def test_keep_alive_comments_alone_are_not_progress(upstream, http):
    """`: keep-alive` comments reset the read timeout, not the idle limit."""
    first = openai_sse(chunk({"role": "assistant", "content": ""}), done=False)
    upstream.enqueue(Reply(chunks=first, forever=OPENAI_KEEP_ALIVE, delay_s=0.01))
    provider = make(upstream, http, idle_timeout_s=0.2)
    events, error = await asyncio.wait_for(collect(provider, request()), 30)
    assert [type(event) for event in events] == [MessageStart]
    assert "no progress for 0.2 s, only pings (provider_idle_timeout_s)" in error.message
    assert (error.upstream_status, error.retryable) == (200, False)
    await asyncio.wait_for(upstream.requests[0].closed.wait(), 10)
    assert len(upstream.requests) == 1


async def test_connection_cut_mid_stream(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:3], cut=True))
    events, error = await collect(make(upstream, http), request())
    assert events == HELLO_EVENTS[:4]
    assert "mid-stream (HTTP 200)" in error.message and "connection closed" in error.message
    assert (error.upstream_status, error.retryable) == (200, False)
    assert len(upstream.requests) == 1


async def test_body_ending_before_finish_reason_is_an_error(upstream, http):
    upstream.enqueue(Reply(chunks=hello()[:3]))
    events, error = await collect(make(upstream, http), request())
    assert events == HELLO_EVENTS[:4]
    assert "ended before finish_reason" in error.message


async def test_error_chunk_inside_200_stream(upstream, http):
    error_chunk = {"error": {"message": "The server had an error", "type": "server_error"}}
    upstream.enqueue(Reply(chunks=openai_sse(chunk({"content": "Hel"}), error_chunk)))
    events, error = await collect(make(upstream, http), request())
    assert events == [HELLO_EVENTS[0], HELLO_EVENTS[1], HELLO_EVENTS[2]]
    assert error.message == (
        "provider openai failed mid-stream (HTTP 200): server_error: The server had an error"
    )


def openai_error(status: int, kind: str, message: str, **headers: str) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Reply(status, [json.dumps(body).encode()], headers)


async def test_429_with_retry_after_is_retried(upstream, http):
    upstream.enqueue(
        openai_error(429, "requests", "Rate limit reached", **{"retry-after": "0.2"}),
        Reply(chunks=hello()),
    )
    events, error = await collect(make(upstream, http, retry_base_s=0.001), request())
    assert error is None and events == HELLO_EVENTS
    first, second = upstream.requests
    assert second.at - first.at >= 0.2


async def test_500_is_retried_until_max_retries(upstream, http):
    upstream.enqueue(*(openai_error(500, "server_error", "oops") for _ in range(2)))
    _, error = await collect(make(upstream, http, max_retries=1), request())
    assert len(upstream.requests) == 2
    assert error.message == "provider openai is unavailable: oops [HTTP 500 server_error]"


async def test_401_is_not_retried_and_never_quotes_the_key(upstream, http):
    masked = f"Incorrect API key provided: {KEY[:8]}***{KEY[-4:]}"
    upstream.enqueue(openai_error(401, "invalid_request_error", masked))
    _, error = await collect(make(upstream, http), request())
    assert len(upstream.requests) == 1
    assert error.message == (
        "invalid API key for provider openai (OPENAI_API_KEY) [HTTP 401 invalid_request_error]"
    )


async def test_401_without_a_key_says_which_variable_to_set(upstream, http):
    upstream.enqueue(openai_error(401, "invalid_request_error", "missing key"))
    _, error = await collect(make(upstream, http, env={}), request())
    assert "requires an API key: set OPENAI_API_KEY" in error.message


async def test_404_from_a_compatible_server_names_the_model(upstream, http):
    upstream.enqueue(
        Reply(404, [b'{"error":"model \\"llama9\\" not found, try pulling it first"}'])
    )
    _, error = await collect(make(upstream, http), request(model="llama9"))
    assert error.message.startswith("model 'llama9' not found at provider openai")
    assert 'model "llama9" not found, try pulling it first [HTTP 404]' in error.message


async def test_no_key_with_base_url_sends_no_authorization(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    events, error = await collect(make(upstream, http, env={}), request())
    assert error is None and events == HELLO_EVENTS
    assert "authorization" not in upstream.requests[0].headers


async def test_base_url_from_the_environment(upstream, http):
    upstream.enqueue(Reply(chunks=hello()))
    provider = OpenAIProvider({}, context(http, {"OPENAI_BASE_URL": f"{upstream.url}/v1/"}))
    _, error = await collect(provider, request())
    assert error is None and upstream.requests[0].path == "/v1/chat/completions"


async def test_no_key_and_no_base_url_fails_before_any_request(http):
    ctx = msgspec.structs.replace(context(http, {}), access=Access(agent_key_env=["MY_*"]))
    with pytest.raises(AgentUnusable) as caught:
        OpenAIProvider({"api_key_env": "MY_OPENAI_KEY"}, ctx)
    assert caught.value.message.startswith("no API key for provider openai: set MY_OPENAI_KEY")
    with pytest.raises(AgentUnusable, match="set OPENAI_API_KEY"):
        OpenAIProvider({}, context(http, {}))


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
