"""What makes an agent definition runnable: a known provider with valid options, known
built-in tools, client tools that do not shadow them."""

from __future__ import annotations

from server import providers, tools
from server.errors import InvalidRequest
from server.models import Agent, ClientTool


def check(agent: Agent) -> Agent:
    """Refuse a definition that could never run: unknown provider, tool or option."""
    providers.check_agent(agent.provider, agent.options)
    seen: set[str] = set()
    for tool in agent.tools:
        name = tool.name if isinstance(tool, ClientTool) else tool
        if name in seen:
            raise InvalidRequest(f"tool {name!r} is listed twice", field="tools")
        seen.add(name)
        if isinstance(tool, str) and not tools.is_builtin(tool):
            known = ", ".join(sorted(tools.BUILTIN))
            raise InvalidRequest(f"unknown tool {tool!r}; built-in tools: {known}", field="tools")
        if isinstance(tool, ClientTool) and tools.is_builtin(tool.name):
            raise InvalidRequest(
                f"client tool {tool.name!r} has the name of a built-in tool", field="tools"
            )
    return agent
