"""Real servers for tests: uvicorn in a thread (same process) or `sessiond serve` as a child
process (for SIGKILL and SIGTERM), each on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from server.cli.serve import Server, uvicorn_config
from server.config import Settings
from tests.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, f"the server at {url} to become healthy")


class ThreadServer:
    """The app under uvicorn in a background thread; `restart()` reopens the same database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app: Any = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThreadServer:
        self.app = create_app(self.settings)
        config = uvicorn_config(
            self.app,
            self.settings,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self._server = Server(config, self.app)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_healthy(self.url)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.handle_exit(signal.SIGTERM, None)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "server thread did not stop"
        self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        """Wait until every write the server has queued so far is committed."""
        assert self._server is not None and self._server.loop is not None
        flushed = self.app.state.store.db.flush()
        asyncio.run_coroutine_threadsafe(flushed, self._server.loop).result(30)


class ProcessServer:
    """`python -m server serve` as a child process."""

    def __init__(self, db: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None):
        self.db = db
        self.workdir = workdir
        self.extra = extra
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"server-{self.port}.log"

    def start(self) -> ProcessServer:
        env = {**os.environ, **(self.env or {})}
        for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
            env.pop(key, None)
        command = [sys.executable, "-m", "server", "serve", "--port", str(self.port)]
        command += ["--db", str(self.db), "--allow-root", str(self.workdir), *self.extra]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_healthy(self.url)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> float:
        """SIGTERM; returns the seconds the process took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
