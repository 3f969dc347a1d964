"""Child processes: `sessiond serve`, the bare baseline app, and (with --profile) py-spy
(extra py-spy flags from BENCH_PYSPY_ARGS, e.g. `--gil` to sample only the GIL holder).

Each child runs on a free loopback port, logs to a file in the scenario's temporary folder,
and is stopped with SIGTERM (then SIGKILL) however the scenario ends. Its log is scanned
afterwards for errors, tracebacks and 5xx answers, which the report lists as server problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import client

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")
# text lines and JSON lines (`"level": "error"`, a request's `"status": 5xx`) alike
_PROBLEM = re.compile(
    r"ERROR|CRITICAL|Traceback|\" 5\d\d |\"level\": \"(?:error|critical)\"|\"status\": 5\d\d\b"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status_kb(pid: int, field: str = "VmRSS") -> int:
    """A `kB` line of /proc/<pid>/status (VmRSS: resident now; VmHWM: the peak so far)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The bench's environment without settings or keys that would change the server."""
    skip = ("SESSIOND_", "ANTHROPIC_", "OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(extra or {})
    return env


class Child:
    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.port = free_port()
        self.log_path = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> Child:
        argv = [arg.replace("{port}", str(self.port)) for arg in self.argv]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.tail()}")
            try:
                if (await client.call(self.port, "GET", "/healthz", timeout=2)).status == 200:
                    return self
            except (OSError, client.HttpError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy in {timeout:g} s:\n{self.tail()}")

    def rss_kb(self) -> int:
        return status_kb(self.pid)

    def cpu_s(self) -> float:
        """User + system CPU seconds the child has used so far (all its threads)."""
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.exit_code is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.exit_code = self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def problems(self, limit: int = 10) -> list[str]:
        """Error lines of the log, and a stop that was not clean."""
        found: list[str] = []
        if self.log_path.exists():
            for line in self.log_path.read_text(errors="replace").splitlines():
                if _PROBLEM.search(line):
                    found.append(f"{self.name}: {line.strip()[:300]}")
        # uvicorn re-raises the SIGTERM it caught once it has shut down: -15 is a clean stop.
        if self.exit_code not in (None, 0, -signal.SIGTERM):
            found.append(f"{self.name}: exit code {self.exit_code} after SIGTERM")
        return found[:limit]


def sessiond(cwd: Path, extra_env: dict[str, str] | None = None, db: str | None = None) -> Child:
    """`sessiond serve …`; BENCH_SESSIOND may name another command to run in its place (a
    build to compare, or a wrapper that patches the server for an experiment)."""
    argv = [
        *sessiond_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--db",
        db or str(cwd / "sessiond.db"),
        "--shutdown-grace",
        "2",
    ]
    # A key's runs a minute are the operator's to set: one key drives every client here, and
    # the bench measures the server (counting them included), not that limit.
    env = {"SESSIOND_RATE_RUNS_PER_MIN": "1000000000", **(extra_env or {})}
    return Child("sessiond", argv, cwd, clean_env(env))


def sessiond_command() -> list[str]:
    exe = BIN / "sessiond"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "server"]
    if os.environ.get("BENCH_SESSIOND"):
        command = shlex.split(os.environ["BENCH_SESSIOND"])
    return command


async def make_key(db: Path) -> str:
    """A new admin key on the database (`sessiond keys create`), as an operator makes one."""
    argv = [*sessiond_command(), "keys", "create", "--name", "bench", "--scope", "admin"]
    proc = await asyncio.create_subprocess_exec(
        *argv, "--db", str(db), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"sessiond keys create exited with {proc.returncode}")
    return out.decode().strip()


def baseline(cwd: Path) -> Child:
    argv = [sys.executable, "-m", "bench.baseline", "--port", "{port}"]
    env = clean_env({"PYTHONPATH": str(REPO)})
    return Child("baseline", argv, cwd, env)


class Profiler:
    """py-spy sampling a child while a scenario runs; writes collapsed stacks (--format raw)."""

    def __init__(self, pid: int, output: Path) -> None:
        exe = BIN / "py-spy"
        path = str(exe) if exe.exists() else shutil.which("py-spy")
        if path is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        output.parent.mkdir(parents=True, exist_ok=True)
        argv = [path, "record", "--pid", str(pid), "--output", str(output)]
        extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. --gil, --rate 1000
        argv += ["--format", "raw", "--nonblocking", *extra]
        if "--rate" not in extra:
            argv += ["--rate", "200"]
        self.output = output
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def busy(on: bool) -> Iterator[None]:
    """With `on`, a child that spins on one core for as long as the block runs: a host busy
    with other work, for both sessiond and its baseline alike (`--busy`)."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()
