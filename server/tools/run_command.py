"""run_command: a shell command in the work_dir, with a time limit and a clean environment.

The operator enables it (--allow-run-command); an agent cannot. It runs inside bubblewrap
(see sandbox.py), or, where the machine has none and the operator allows it, as a plain
process with the same clean environment. Either way the command runs as the leader of a new
process group, so that a timeout or a cancelled run can kill everything it started with one
killpg (the sandbox goes with its bwrap). Processes it leaves running in the background are
killed when it exits, too: otherwise they would outlive the run unseen and hold the output
pipe open.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import suppress
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.errors import ToolError
from server.tools import paths, sandbox
from server.tools.base import ToolContext, ToolSettings

MAX_TIMEOUT_S = 600
NOT_ENABLED = (
    "run_command is not enabled on this server: its operator has not started it with "
    "--allow-run-command (env SESSIOND_ALLOW_RUN_COMMAND=1)"
)
_CHUNK = 64 * 1024
_POLL_S = 0.05
_DRAIN_S = 2.0


class RunCommandInput(msgspec.Struct, forbid_unknown_fields=True):
    command: Annotated[str, Meta(min_length=1, description="The shell command line to run.")]
    # UNSET: the server's timeout; sent as null it is refused, as any value not a number.
    timeout_s: (
        UnsetType
        | Annotated[
            float,
            Meta(
                ge=1,
                le=MAX_TIMEOUT_S,
                description="Seconds before it is killed (default: the server's, often 30).",
            ),
        ]
    ) = UNSET


class RunCommand:
    name = "run_command"
    description = (
        "Run a shell command (with /bin/sh -c) in the working directory and reply with its "
        "combined stdout and stderr, then its exit code (128 + N when signal N killed it). "
        "The command has no input, a minimal environment (PATH, HOME=the working "
        "directory, LANG=C.UTF-8, TERM=dumb) and a time limit, after which it is killed; "
        "in the server's sandbox it has no network and sees only the working directory "
        "(writable) and the system's programs; "
        "processes it leaves in the background are killed when it exits. Long output keeps "
        "its start and end."
    )
    Input = RunCommandInput
    read_only = False

    async def run(self, input: RunCommandInput, ctx: ToolContext) -> str:
        if not ctx.settings.allow_run_command:
            raise ToolError(NOT_ENABLED)
        root = paths.work_root(ctx)
        argv, status = _command_line(input.command, root, ctx.settings)
        timeout = ctx.settings.command_timeout_s if input.timeout_s is UNSET else input.timeout_s
        try:
            return await _run(argv, root, status, timeout, ctx.settings.output_max_bytes)
        finally:
            if status is not None:
                os.close(status[0])


async def _run(
    argv: list[str], root: str, status: tuple[int, int] | None, timeout: float, cap: int
) -> str:
    output = Output(cap)
    try:
        proc = await _spawn(argv, root, status)
    finally:
        if status is not None:
            os.close(status[1])  # bwrap has its own copy; ours would keep the pipe open
    try:
        await asyncio.wait_for(_finish(proc, output), timeout)
    except TimeoutError:
        await _stop(proc)
        raise ToolError(f"timed out after {timeout:g} s; the command was killed") from None
    except asyncio.CancelledError:
        await _stop(proc)
        raise
    if status is not None and b'"exit-code"' not in _read_status(status[0]):
        raise sandbox.failed(output.text())
    return f"{output.text() or '(no output)'}\n{_exit_status(proc.returncode)}"


def _command_line(
    command: str, root: str, settings: ToolSettings
) -> tuple[list[str], tuple[int, int] | None]:
    """The program to start, and (sandboxed) the pipe bwrap reports the command's start and
    exit on: a bwrap that ends without reporting an exit could not set the sandbox up."""
    bwrap = sandbox.bwrap_path()
    if bwrap is None:
        if not settings.allow_unsandboxed_commands:
            raise sandbox.missing()
        return sandbox.unsandboxed(command), None
    status = os.pipe()
    argv = sandbox.sandboxed(bwrap, root, command, settings.hidden_paths)
    return [argv[0], "--json-status-fd", str(status[1]), *argv[1:]], status


async def _spawn(
    argv: list[str], root: str, status: tuple[int, int] | None
) -> asyncio.subprocess.Process:
    """The started process. A cancellation while asyncio connects its pipes would kill only
    the group's leader (the command's background jobs would live on), so the start is
    shielded, and then the whole group is killed."""
    start = asyncio.ensure_future(_exec(argv, root, status))
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        with suppress(Exception):
            await _stop(await start)
        raise


async def _exec(
    argv: list[str], root: str, status: tuple[int, int] | None
) -> asyncio.subprocess.Process:
    extra: dict[str, Any] = (
        {"pass_fds": (status[1],)} if status else {"preexec_fn": sandbox.die_with_server()}
    )
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=root,
        env=sandbox.clean_env(root),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        **extra,
    )


def _read_status(fd: int) -> bytes:
    """What bwrap wrote to its status pipe (it has exited: all it wrote is in the pipe)."""
    data = bytearray()
    os.set_blocking(fd, False)
    with suppress(BlockingIOError):
        while chunk := os.read(fd, _CHUNK):
            data += chunk
    return bytes(data)


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
    """The shell's exit code; the sandbox and the wrapper report a shell killed by signal N
    as 128 + N, the way shells do, and a negative code is bwrap's own death by a signal."""
    if code is not None and code > 128 and (name := _signal_name(code - 128)):
        return f"exit code: {code} (128 + {name})"
    if code is None or code >= 0:
        return f"exit code: {code}"
    return f"exit code: {code} (killed by {_signal_name(-code) or f'signal {-code}'})"


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None
