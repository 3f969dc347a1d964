"""Token counts for POST /v1/messages/count_tokens: the agent's provider counts where its
upstream can (Anthropic's does); None where it cannot, or fails (the caller estimates)."""

from __future__ import annotations

import logging

from server import providers, tools
from server.errors import ApiError
from server.models import Agent, ClientTool, ToolSpec, Turn
from server.providers.base import ProviderContext, ProviderRequest, TokenCounter

log = logging.getLogger("sessiond.runs")


async def provider_count(
    agent: Agent, ctx: ProviderContext, turns: list[Turn], client: list[ClientTool]
) -> int | None:
    """`agent` as the run would use it (its tools offered, the request's system prompt in)."""
    try:
        provider = providers.create(agent, ctx)
    except ApiError:
        return None
    if not isinstance(provider, TokenCounter):
        return None
    names = [t for t in agent.tools if isinstance(t, str) and tools.is_builtin(t)]
    specs = [tools.spec(name) for name in names]
    specs += [
        ToolSpec(t.name, t.description, t.input_schema)
        for t in agent.tools
        if isinstance(t, ClientTool)
    ]
    specs += [ToolSpec(t.name, t.description, t.input_schema) for t in client]
    request = ProviderRequest(
        model=agent.model,
        system=agent.system,
        messages=turns,
        tools=specs,
        max_tokens=agent.max_tokens,
        temperature=None,
        options=agent.options,
        step=0,
    )
    try:
        return await provider.count_tokens(request)
    except ApiError as exc:
        log.info("agent %s: the provider's token count failed: %s", agent.id, exc.message)
        return None
