"""Provider registry: build the provider an agent names, and pick the default agent's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.errors import AgentUnusable, InvalidRequest
from server.models import Agent
from server.providers import access, anthropic, http, openai
from server.providers.base import Access, Provider, ProviderContext
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
    """The agent's provider, or AgentUnusable: a stored definition the server cannot run now
    (its key is not set, or not for its endpoint; its options no longer pass)."""
    factory = FACTORIES.get(agent.provider)
    if factory is None:
        raise AgentUnusable(f"unknown provider {agent.provider!r}; known: {', '.join(names())}")
    try:
        return factory(agent, ctx)
    except InvalidRequest as exc:
        raise AgentUnusable(f"the agent's options cannot be used: {exc.message}") from exc


def check_agent(provider: str, options: dict[str, Any], ctx: ProviderContext) -> None:
    """Reject an agent definition its provider could never run, or whose options name a key
    variable the operator has not allowed (400 at create time)."""
    if provider not in FACTORIES:
        raise InvalidRequest(
            f"unknown provider {provider!r}; known: {', '.join(names())}", field="provider"
        )
    if provider in ("scripted", "echo"):
        parse_options(options)
    if provider in _HTTP_PROVIDERS:
        problem = access.key_env_problem(
            access.ENDPOINTS[provider], http.parse_options(options), ctx
        )
        if problem is not None:
            raise InvalidRequest(problem, field="options")


def unusable_reason(agent: Agent, ctx: ProviderContext) -> str | None:
    """Why the agent cannot run as the server is set up now (None: it can)."""
    try:
        create(agent, ctx)
    except AgentUnusable as exc:
        return exc.message
    return None


def access_of(base_urls: list[str], agent_key_env: list[str]) -> Access:
    """The operator's settings `provider_base_urls` and `agent_key_env` (see access.py)."""
    return Access(access.parse_base_urls(base_urls), list(agent_key_env))


def choose_default(env: Mapping[str, str]) -> tuple[str, str | None, dict[str, Any]]:
    """(provider, model, options) of the built-in default agent: the first provider whose key
    is set (ANTHROPIC_API_KEY, then OPENAI_API_KEY or OPENAI_BASE_URL), else the echo stand-in."""
    if env.get("ANTHROPIC_API_KEY"):
        return "anthropic", anthropic.DEFAULT_MODEL, {}
    base_url = env.get("OPENAI_BASE_URL")
    if env.get("OPENAI_API_KEY") or base_url:
        return "openai", openai.DEFAULT_MODEL, {"base_url": base_url} if base_url else {}
    return "echo", None, {}
