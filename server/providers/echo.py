"""`echo`: the offline fallback of the default agent. It is not a model and says so.

It streams back a short reply naming itself and quoting the user's last message, so that
`make run` works with no API key and no network and nobody mistakes it for a model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from server.events import StepEvent
from server.models import TextBlock
from server.providers.base import ProviderRequest
from server.providers.scripted import ScriptedStep, play_step

_LIMIT = 400


def last_user_text(request: ProviderRequest) -> str:
    for turn in reversed(request.messages):
        if turn.role != "user":
            continue
        texts = [block.text for block in turn.content if isinstance(block, TextBlock)]
        if texts:
            return " ".join(texts)
    return ""


def reply_for(text: str) -> str:
    quoted = text if len(text) <= _LIMIT else text[:_LIMIT] + "…"
    return (
        f'[echo] You said: "{quoted}". This reply comes from sessiond\'s built-in echo '
        "provider, not a language model: set ANTHROPIC_API_KEY or OPENAI_API_KEY before "
        "`sessiond serve` (or create an agent with a real provider) to talk to a model."
    )


class EchoProvider:
    name = "echo"

    def __init__(self, options: dict[str, Any]) -> None:
        self.delay_s = float(options.get("token_delay_ms", 0)) / 1000

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]:
        step = ScriptedStep(text=reply_for(last_user_text(request)))
        async for event in play_step(step, request, self.delay_s):
            yield event
