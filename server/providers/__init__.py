"""Provider registry: build the provider an agent names, and pick the default agent's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.errors import InvalidRequest
from server.models import Agent
from server.providers import anthropic, http, openai
from server.providers.base import Provider, ProviderContext
from server.providers.echo import EchoProvider
from server.providers.scripted import ScriptedProvider, parse_options

Factory = Callable[[Agent, ProviderContext], Provider]


def _scripted(agent: Agent, ctx: ProviderContext) -> Provider:
    return ScriptedProvider(agent.options)


def _echo(agent: Agent, ctx: ProviderContext) -> Provider:
    return EchoProvider(agent.options)


def _anthropic(agent: Agent, ctx: ProviderContext) -> Provider:
    return anthropic.AnthropicProvider(agent.options, ctx)


def _openai(agent: Agent, ctx: ProviderContext) -> Provider:
    return openai.OpenAIProvider(agent.options, ctx)


FACTORIES: dict[str, Factory] = {
    "scripted": _scripted,
    "echo": _echo,
    "anthropic": _anthropic,
    "openai": _openai,
}
_HTTP_PROVIDERS = frozenset({"anthropic", "openai"})


def names() -> list[str]:
    return sorted(FACTORIES)


def create(agent: Agent, ctx: ProviderContext) -> Provider:
    factory = FACTORIES.get(agent.provider)
    if factory is None:
        raise InvalidRequest(f"unknown provider {agent.provider!r}; known: {', '.join(names())}")
    return factory(agent, ctx)


def check_agent(provider: str, options: dict[str, Any]) -> None:
    """Reject an agent definition its provider could never run (400 at create time)."""
    if provider not in FACTORIES:
        raise InvalidRequest(
            f"unknown provider {provider!r}; known: {', '.join(names())}", field="provider"
        )
    if provider in ("scripted", "echo"):
        parse_options(options)
    if provider in _HTTP_PROVIDERS:
        http.parse_options(options)


def choose_default(env: Mapping[str, str]) -> tuple[str, str | None, dict[str, Any]]:
    """(provider, model, options) of the built-in default agent: the first provider whose key
    is set (ANTHROPIC_API_KEY, then OPENAI_API_KEY or OPENAI_BASE_URL), else the echo stand-in."""
    if env.get("ANTHROPIC_API_KEY"):
        return "anthropic", anthropic.DEFAULT_MODEL, {}
    base_url = env.get("OPENAI_BASE_URL")
    if env.get("OPENAI_API_KEY") or base_url:
        return "openai", openai.DEFAULT_MODEL, {"base_url": base_url} if base_url else {}
    return "echo", None, {}
