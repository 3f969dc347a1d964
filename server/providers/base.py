"""What every provider is: given a step's request, yield the step's events.

A provider yields Anthropic-style step events (events.StepEvent): `message_start` (with the
step's input usage), per content block `content_block_start`, deltas, `content_block_stop`,
then `message_delta` (stop_reason, cumulative usage) and `message_stop`. A tool call is a
`tool_use` block whose input arrives as `input_json_delta` fragments; the loop assembles the
final message from the events, so every provider is normalised in one place.

A provider raises errors.ProviderError for anything that goes wrong upstream. Cancelling the
task that iterates `stream()` must close the upstream request at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from server.events import StepEvent
from server.models import ToolSpec, Turn


class ProviderRequest(msgspec.Struct):
    model: str | None
    system: str | None
    messages: list[Turn]
    tools: list[ToolSpec]
    max_tokens: int | None
    temperature: float | None
    options: dict[str, Any]
    step: int  # 0-based index of this model call within the run
    # about session.size_of(messages), kept as the history grows: for a provider that must
    # estimate input usage without encoding a long history on every step (0: not known)
    history_size: int = 0
    # "step": a step of the run; "summary": a compaction's summary of earlier turns
    purpose: str = "step"


class Provider(Protocol):
    name: str

    def stream(self, request: ProviderRequest) -> AsyncIterator[StepEvent]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider whose upstream counts a request's input tokens."""

    async def count_tokens(self, request: ProviderRequest) -> int: ...


class ProviderSettings(msgspec.Struct, frozen=True):
    """Server-wide knobs for providers that speak HTTP."""

    max_retries: int = 3
    retry_base_s: float = 0.5
    retry_max_s: float = 20.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    idle_timeout_s: float = 90.0  # without an event other than pings (see http._attempt)


class Access(msgspec.Struct, frozen=True):
    """The operator's word on credentials (see providers/access.py): the endpoints besides
    its default and its *_BASE_URL variable that get the server's key for a provider, and the
    patterns of the variable names an agent may name in `options.api_key_env`."""

    base_urls: dict[str, list[str]] = {}
    agent_key_env: list[str] = []


class ProviderContext(msgspec.Struct, frozen=True):
    """What a provider may reach: the shared HTTP client, settings, the environment (read for
    API keys by name; keys are never stored or shown) and where its keys may go."""

    http: Any  # httpx.AsyncClient; typed Any so that only providers/ import httpx
    settings: ProviderSettings
    env: Mapping[str, str]
    access: Access = Access()


# Where an agent's own key variable is set, as messages name it.
AGENT_KEY_HINT = "options.api_key_env (a variable the operator allows with --agent-key-env)"


class Target(msgspec.Struct, frozen=True):
    """Where one agent's calls go, and the key they carry (never shown: see http.Call)."""

    root: str  # the API root, without a trailing slash
    key_env: str | None  # the variable the key comes from; None when no key may be sent
    key: str | None

    @property
    def key_hint(self) -> str:
        """Where the key is set, as messages name it."""
        return self.key_env or AGENT_KEY_HINT
