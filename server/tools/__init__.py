"""The built-in tools and the one way the loop calls them.

`call` never raises for anything a tool does wrong: every failure becomes a ToolOutcome
with is_error set and a message the model can act on. Only cancellation propagates, so
that a cancelled run stops its tools.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from server.errors import ToolError
from server.models import ToolSpec
from server.tools import inputs
from server.tools.base import Tool, ToolContext, ToolSettings
from server.tools.edit_file import EditFile
from server.tools.glob import Glob
from server.tools.grep import Grep
from server.tools.list_files import ListFiles
from server.tools.read_file import ReadFile
from server.tools.run_command import NOT_ENABLED, RunCommand
from server.tools.write_file import WriteFile

__all__ = ["BUILTIN", "READ_ONLY", "ToolOutcome", "call", "is_builtin", "not_enabled", "spec"]

_log = logging.getLogger(__name__)

BUILTIN: dict[str, Tool] = {
    tool.name: tool
    for tool in (ListFiles(), ReadFile(), Glob(), Grep(), WriteFile(), EditFile(), RunCommand())
}
READ_ONLY: tuple[str, ...] = tuple(name for name, tool in BUILTIN.items() if tool.read_only)


class ToolOutcome(msgspec.Struct):
    content: str
    is_error: bool


def is_builtin(name: str) -> bool:
    return name in BUILTIN


def not_enabled(name: str, settings: ToolSettings) -> str | None:
    """Why this server's operator keeps the built-in tool from agents (None: they don't)."""
    if name == RunCommand.name and not settings.allow_run_command:
        return NOT_ENABLED
    return None


def spec(name: str) -> ToolSpec:
    """How the tool is shown to a model; KeyError for an unknown name."""
    tool = BUILTIN[name]
    return ToolSpec(tool.name, tool.description, inputs.schema(tool.Input))


async def call(name: str, input: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    tool = BUILTIN.get(name)
    if tool is None:
        return ToolOutcome(f"unknown tool {name!r}; available: {', '.join(BUILTIN)}", True)
    try:
        args = inputs.decode(tool.Input, input)
    except inputs.Invalid as exc:
        return ToolOutcome(_encodable(f"invalid input for {name}: {exc}"), True)
    try:
        return ToolOutcome(_encodable(await tool.run(args, ctx)), False)
    except ToolError as exc:
        return ToolOutcome(_encodable(str(exc)), True)
    except Exception as exc:
        _log.exception("tool %s failed (session %s, run %s)", name, ctx.session_id, ctx.run_id)
        return ToolOutcome(_encodable(f"tool {name} failed: {type(exc).__name__}: {exc}"), True)


def _encodable(text: str) -> str:
    """Text that encodes as UTF-8: a file name that is not UTF-8 reaches us with surrogates
    (os.fsdecode), which would make the message impossible to store or send."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
