"""What a built-in tool is, and what it may know about the run that calls it."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class ToolSettings(msgspec.Struct, frozen=True):
    read_max_bytes: int = 256 * 1024
    output_max_bytes: int = 64 * 1024
    list_max_entries: int = 1000
    grep_max_matches: int = 200
    command_timeout_s: float = 30.0
    # run_command: off unless the operator enables it; confined by bubblewrap, or run
    # without it only where the operator allows that; never shown the server's own files
    # (its database) even when they lie in a work_dir.
    allow_run_command: bool = False
    allow_unsandboxed_commands: bool = False
    hidden_paths: tuple[str, ...] = ()


class ToolContext(msgspec.Struct, frozen=True):
    """`work_dir` is the session's absolute working folder (None: the session has none)."""

    work_dir: str | None
    session_id: str
    run_id: str
    settings: ToolSettings = ToolSettings()


class Tool(Protocol):
    """`Input` is the Struct a call's input is converted to before `run` (see inputs.py);
    it is also the schema the model is shown."""

    name: str
    description: str
    read_only: bool

    @property
    def Input(self) -> type[msgspec.Struct]: ...

    async def run(self, input: Any, ctx: ToolContext) -> str:
        """Do the work; raise errors.ToolError with a message a model can act on."""
        ...
