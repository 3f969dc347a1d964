"""What a scenario gets: its size (smoke or full), a temporary folder, and the child
processes it starts, all stopped (and their logs read for problems) when it ends."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import TypeVar

import msgspec

from bench import client, procs

T = TypeVar("T")
JSON_BODY = b'{"message":"go"}'


class Context:
    def __init__(
        self,
        name: str,
        smoke: bool,
        root: Path,
        profile_dir: Path | None = None,
        logs_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.smoke = smoke
        self.root = root
        self.profile_dir = profile_dir
        self.logs_dir = logs_dir
        self.children: list[procs.Child] = []
        self.profilers: dict[int, procs.Profiler] = {}
        self.problems: list[str] = []
        self.notes: dict[str, object] = {}  # measurements helpers record for the details

    def size(self, full: T, smoke: T) -> T:
        return smoke if self.smoke else full

    async def settle(self, seconds: float) -> None:
        """A pause before a measurement (memory, a flush); a fifth of it in a smoke run."""
        await asyncio.sleep(seconds / 5 if self.smoke else seconds)

    @property
    def db(self) -> Path:
        return self.root / "sessiond.db"

    async def sessiond(
        self, env: dict[str, str] | None = None, root: Path | None = None, db: str | None = None
    ) -> procs.Child:
        """A `sessiond serve` child on the scenario's database, or on one in `root`, or on
        `db` (a PostgreSQL URL several children share)."""
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        child = procs.sessiond(root or self.root, env, db)
        self.children.append(child)
        await child.start()
        if self.profile_dir is not None:
            count = sum(1 for c in self.children if c.name == "sessiond")
            suffix = f"-{count}" if count > 1 else ""
            output = self.profile_dir / f"{self.name}{suffix}.txt"
            self.profilers[child.pid] = procs.Profiler(child.pid, output)
            print(f"  profiling sessiond (pid {child.pid}) into {output}", file=sys.stderr)
        return child

    async def baseline(self) -> procs.Child:
        child = procs.baseline(self.root)
        self.children.append(child)
        return await child.start()

    async def stop(self, child: procs.Child) -> None:
        await asyncio.sleep(0.05)  # let connections the client closed actually close
        self._stop(child)

    def _stop(self, child: procs.Child) -> None:
        if child.proc is None or child.exit_code is not None:
            return
        profiler = self.profilers.pop(child.pid, None)
        if profiler is not None:
            profiler.stop()
        child.stop()
        if child.name == "sessiond":  # the bare app's quirks are not findings
            self.problems += child.problems()
        if self.logs_dir is not None and child.log_path.exists():
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            count = sum(
                1 for c in self.children[: self.children.index(child)] if c.name == child.name
            )
            suffix = f"-{count + 1}" if count else ""
            shutil.copyfile(child.log_path, self.logs_dir / f"{self.name}-{child.name}{suffix}.log")

    def close(self) -> list[str]:
        for child in self.children:
            self._stop(child)
        return self.problems


class Api:
    """The few sessiond calls the scenarios make to set up (one connection per call, or one
    per worker when creating many sessions)."""

    def __init__(self, port: int, headers: str = "") -> None:
        self.port = port
        self.headers = headers  # an API key's, once auth is on

    async def post(self, path: str, body: bytes, expect: int = 201) -> bytes:
        response = await client.call(self.port, "POST", path, body, headers=self.headers)
        if response.status != expect:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {response.body[:300]!r}")
        return response.body

    async def agent(self, body: bytes) -> str:
        return _id(await self.post("/agents", body))

    async def sessions(self, agent_id: str, count: int, concurrency: int = 32) -> list[str]:
        body = b'{"agent_id":"%s"}' % agent_id.encode()
        ids: list[str] = [""] * count
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            conn = await client.connect(self.port)
            try:
                while next_index < count:
                    index = next_index
                    next_index += 1
                    sent = conn.request("POST", "/sessions", body, self.headers)
                    response = await asyncio.wait_for(sent, 30)
                    if response.status != 201:
                        raise RuntimeError(
                            f"POST /sessions: HTTP {response.status}: {response.body!r}"
                        )
                    ids[index] = _id(response.body)
            finally:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        return ids

    async def turn(self, session_id: str, message: bytes = JSON_BODY) -> bytes:
        return await self.post(f"/sessions/{session_id}/message", message, expect=200)

    async def with_auth(self, db: Path) -> Api:
        """Turn auth on for the running server (an admin key made on its database) and wait
        until it asks for keys; the answer is this Api with the key."""
        key = await procs.make_key(db)
        for _ in range(600):  # the server counts keys once a second
            if (await client.call(self.port, "GET", "/sessions")).status == 401:
                return Api(self.port, f"Authorization: Bearer {key}\r\n")
            await asyncio.sleep(0.05)
        raise RuntimeError("auth did not turn on within 30 s of making a key")


def _id(body: bytes) -> str:
    value: str = msgspec.json.decode(body)["id"]
    return value
