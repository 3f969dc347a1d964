"""Provider registry: build the provider an agent names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.errors import InvalidRequest
from server.models import Agent
from server.providers.base import Provider, ProviderContext
from server.providers.echo import EchoProvider
from server.providers.scripted import ScriptedProvider, parse_options

Factory = Callable[[Agent, ProviderContext], Provider]


def _scripted(agent: Agent, ctx: ProviderContext) -> Provider:
    return ScriptedProvider(agent.options)


def _echo(agent: Agent, ctx: ProviderContext) -> Provider:
    return EchoProvider(agent.options)


FACTORIES: dict[str, Factory] = {"scripted": _scripted, "echo": _echo}


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
    if provider == "scripted":
        parse_options(options)
