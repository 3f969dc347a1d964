"""What the scenarios send and expect: scripted texts, agent bodies, and the SSE frames of a
run exactly as sessiond frames them (the baseline app serves the same bytes)."""

from __future__ import annotations

from typing import Any

import msgspec

_json = msgspec.json.Encoder()
RUN_ID = "01BENCHBASE0000000000000000"
TEXT_EVENTS_OVERHEAD = 6  # message_start, block start/stop, message_delta, message_stop, done


def words(n: int) -> list[str]:
    """The scripted provider's tokens for `text(n)`: each word with its trailing space."""
    return [f"w{i} " if i < n - 1 else f"w{i}" for i in range(n)]


def text(n: int) -> str:
    return "".join(words(n))


def scripted_agent(name: str, reply_words: int, token_delay_ms: float = 0) -> bytes:
    options: dict[str, Any] = {"script": [{"text": text(reply_words)}]}
    if token_delay_ms:
        options["token_delay_ms"] = token_delay_ms
    return _json.encode({"name": name, "provider": "scripted", "options": options})


def frame(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), _json.encode(data))


RETRY = b"retry: 3000\n\n"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def head_frames() -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_01BENCHBASE000000000000000",
            "model": None,
            "role": "assistant",
            "usage": {"input_tokens": 1, "output_tokens": 0},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return [frame(1, "message_start", start), frame(2, "content_block_start", block)]


def delta_frame(i: int, word: str) -> bytes:
    return frame(i + 3, "text_delta", {"type": "text_delta", "text": word, "index": 0})


def tail_frames(n: int) -> list[bytes]:
    seq = n + 3
    usage = {"input_tokens": 1, "output_tokens": n}
    done = {
        "type": "done",
        "usage": usage,
        "steps": 1,
        "run_id": RUN_ID,
        "stop_reason": "end_turn",
        "status": "completed",
    }
    stop_info = {"stop_reason": "end_turn"}
    return [
        frame(seq, "content_block_stop", {"type": "content_block_stop", "index": 0}),
        frame(
            seq + 1, "message_delta", {"type": "message_delta", "delta": stop_info, "usage": usage}
        ),
        frame(seq + 2, "message_stop", {"type": "message_stop"}),
        frame(seq + 3, "done", done),
    ]


def run_frames(n: int) -> list[bytes]:
    """Every frame of a one-step run whose reply is `n` words, `retry:` first."""
    deltas = [delta_frame(i, word) for i, word in enumerate(words(n))]
    return [RETRY, *head_frames(), *deltas, *tail_frames(n)]
