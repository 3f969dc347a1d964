"""What makes an agent definition runnable: a known provider with valid options (and only the
key variables the operator allows), known built-in tools that this server's operator enables,
client tools that do not shadow them; and whether a stored one can run now."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from server import providers, tools
from server.errors import InvalidRequest
from server.ids import now
from server.models import Agent, ClientTool, ToolRef
from server.providers.base import ProviderContext
from server.store import DEFAULT_AGENT_ID
from server.tools import READ_ONLY
from server.tools.base import ToolSettings


def check(agent: Agent, ctx: ProviderContext, settings: ToolSettings) -> Agent:
    """Refuse a definition that could never run here: unknown provider, tool or option, a
    key variable the operator has not allowed, or a built-in tool the operator has not
    enabled."""
    providers.check_agent(agent.provider, agent.options, ctx)
    check_tools(agent.tools)
    for tool in agent.tools:
        if isinstance(tool, str) and (reason := tools.not_enabled(tool, settings)):
            raise InvalidRequest(reason, field="tools")
    return agent


def unusable_reason(agent: Agent, ctx: ProviderContext) -> str | None:
    """Why the agent cannot run now (None: it can): read when the agent is shown, and when a
    run starts."""
    return providers.unusable_reason(agent, ctx)


def offered(agent: Agent, settings: ToolSettings) -> Agent:
    """The agent as a run here uses it: without the built-in tools this server's operator
    has not enabled (an agent stored before, or by a server that enabled them, may name
    them), so that the model is not offered them."""
    kept = [
        t for t in agent.tools if isinstance(t, ClientTool) or not tools.not_enabled(t, settings)
    ]
    if len(kept) == len(agent.tools):
        return agent
    return msgspec.structs.replace(agent, tools=kept)


def for_request(agent: Agent, system: str | None, max_tokens: int | None) -> Agent:
    """The agent as one run uses it: with the request's system prompt after its own, and the
    request's cap on a step's tokens."""
    if system:
        joined = f"{agent.system}\n\n{system}" if agent.system else system
        agent = msgspec.structs.replace(agent, system=joined)
    if max_tokens is not None:
        agent = msgspec.structs.replace(agent, max_tokens=max_tokens)
    return agent


def check_tools(refs: Sequence[ToolRef], taken: Iterable[str] = ()) -> None:
    """Tool names are unique (also against `taken`, the agent's own when a message adds
    client tools), built-in names exist, and client tools do not shadow built-in ones."""
    seen: set[str] = set(taken)
    for tool in refs:
        name = tool.name if isinstance(tool, ClientTool) else tool
        if name in seen:
            raise InvalidRequest(
                f"tool {name!r} is listed twice (or twice with the agent's)", field="tools"
            )
        seen.add(name)
        if isinstance(tool, str) and not tools.is_builtin(tool):
            known = ", ".join(sorted(tools.BUILTIN))
            raise InvalidRequest(f"unknown tool {tool!r}; built-in tools: {known}", field="tools")
        if isinstance(tool, ClientTool) and tools.is_builtin(tool.name):
            raise InvalidRequest(
                f"client tool {tool.name!r} has the name of a built-in tool", field="tools"
            )


def default_agent(env: Mapping[str, str], model_setting: str | None = None) -> Agent:
    """The built-in agent: the provider the environment has a key for, else `echo`."""
    provider, model, options = providers.choose_default(env)
    if provider != "echo" and model_setting:
        model = model_setting
    stamp = now()
    return Agent(
        id=DEFAULT_AGENT_ID,
        name="default",
        provider=provider,
        model=model,
        system="You are a helpful assistant working in the user's session.",
        tools=list(READ_ONLY),
        max_steps=16,
        max_tokens=None,
        temperature=None,
        options=options,
        created_at=stamp,
        updated_at=stamp,
    )
