"""run_command: a shell command in the work_dir, with a time limit and a clean environment.

The command runs as the leader of a new process group, so that a timeout or a cancelled run
can kill everything it started with one killpg. Processes it leaves running in the
background are killed when it exits, too: otherwise they would outlive the run unseen and
hold the output pipe open. The environment is built from scratch, so none of the server's
own variables (API keys) reach the command.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import suppress
from typing import Any

from server.errors import ToolError
from server.tools import paths
from server.tools.base import ToolContext

MAX_TIMEOUT_S = 600
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_CHUNK = 64 * 1024
_POLL_S = 0.05
_DRAIN_S = 2.0


class RunCommand:
    name = "run_command"
    description = (
        "Run a shell command (with /bin/sh -c) in the working directory and reply with its "
        "combined stdout and stderr, then its exit code. The command has no input, a "
        "minimal environment (PATH, HOME=the working directory, LANG=C.UTF-8, TERM=dumb) and "
        "a time limit, after which it is killed; processes it leaves in the background are "
        "killed when it exits. Long output keeps its start and end."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "description": "The shell command line to run.",
                "minLength": 1,
            },
            "timeout_s": {
                "type": "number",
                "description": "Seconds before it is killed (default: the server's, often 30).",
                "minimum": 1,
                "maximum": MAX_TIMEOUT_S,
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    read_only = False

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> str:
        root = paths.work_root(ctx)
        timeout = float(input.get("timeout_s", ctx.settings.command_timeout_s))
        output = Output(ctx.settings.output_max_bytes)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            input["command"],
            cwd=root,
            env=clean_env(root),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(_finish(proc, output), timeout)
        except TimeoutError:
            await _stop(proc)
            raise ToolError(f"timed out after {timeout:g} s; the command was killed") from None
        except asyncio.CancelledError:
            await _stop(proc)
            raise
        return f"{output.text() or '(no output)'}\n{_exit_status(proc.returncode)}"


def clean_env(home: str) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb"}


class Output:
    """The first and last halves of up to `cap` bytes of output; the middle is dropped."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        self.head += chunk[:room]
        self.tail += chunk[room:] if room > 0 else chunk
        del self.tail[: max(0, len(self.tail) - self.tail_cap)]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        if not dropped:
            return (self.head + self.tail).decode("utf-8", "replace").rstrip("\n")
        note = f"\n[truncated: {dropped} bytes of output omitted from the middle]\n"
        return (
            self.head.decode("utf-8", "replace")
            + note
            + self.tail.decode("utf-8", "replace").rstrip("\n")
        )


async def _finish(proc: asyncio.subprocess.Process, output: Output) -> None:
    """Collect output until the shell has exited, then end what it left running."""
    pump = asyncio.create_task(_pump(proc, output))
    try:
        # The pipe usually ends as the shell exits, but a background job can hold it open,
        # and Process.wait() waits for the pipe too; so watch the exit status as well.
        while not pump.done() and proc.returncode is None:
            await asyncio.wait({pump}, timeout=_POLL_S)
        if proc.returncode is None:
            await proc.wait()
        _kill_group(proc.pid)
        await pump
        await proc.wait()
    finally:
        if not pump.done():
            pump.cancel()
            with suppress(asyncio.CancelledError):
                await pump


async def _pump(proc: asyncio.subprocess.Process, output: Output) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(_CHUNK):
        output.add(chunk)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's whole process group, then drain its pipe and reap it."""
    _kill_group(proc.pid)
    # Everything in the group is dead, so the pipe ends at once unless a process escaped
    # into a session of its own and kept it open; don't wait long for that one.
    with suppress(TimeoutError):
        await asyncio.wait_for(_drain(proc), _DRAIN_S)


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.read(_CHUNK):
        pass
    await proc.wait()


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _exit_status(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code: {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"exit code: {code} (killed by {name})"
