"""One serving process per database: a second `sessiond serve` on it refuses to start and
changes nothing, while the first one's run goes on to its one `done`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.store.lock import DatabaseInUse, DatabaseLock
from tests.conftest import scripted_agent
from tests.live import ProcessServer, free_port
from tests.sse import events


def test_a_second_lock_on_the_same_database_names_the_holder(tmp_path: Path) -> None:
    db = str(tmp_path / "one.db")
    first = DatabaseLock(db).acquire()
    try:
        with pytest.raises(DatabaseInUse) as refused:
            DatabaseLock(db).acquire()
        assert db in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
    finally:
        first.release()
    DatabaseLock(db).acquire().release()  # free again once the holder lets go


def test_a_second_server_on_the_same_database_refuses_and_changes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    server = ProcessServer(db, tmp_path).start()
    try:
        script = [{"text": " ".join(f"word{i}" for i in range(40))}]
        agent = scripted_agent(script, options={"token_delay_ms": 25})
        agent_id = httpx.post(f"{server.url}/agents", json=agent).json()["id"]
        body = {"agent_id": agent_id, "work_dir": str(tmp_path)}
        sid = httpx.post(f"{server.url}/sessions", json=body).json()["id"]
        kinds: list[str] = []
        ids: list[int] = []
        refused: list[subprocess.CompletedProcess[str]] = []

        async def go() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                path = f"{server.url}/sessions/{sid}/message/stream"
                async with http.stream("POST", path, json={"message": "go"}) as response:
                    async for event in events(response):
                        if not event.id:
                            continue
                        kinds.append(event.event)
                        ids.append(int(event.id))
                        if len(ids) == 5:  # mid-run: a second server on the same database
                            refused.append(await asyncio.to_thread(second_server, db, tmp_path))

        asyncio.run(go())
        [second] = refused
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert str(db) in lines[0] and f"pid {server.proc.pid}" in lines[0]  # type: ignore[union-attr]
        assert kinds.count("done") == 1 and kinds[-1] == "done"
        assert ids == list(range(1, len(ids) + 1))
        run = httpx.get(f"{server.url}/sessions/{sid}/runs").json()["data"][0]
        assert run["status"] == "completed"
    finally:
        server.stop()


def second_server(db: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "server", "serve", "--port", str(free_port())]
    command += ["--db", str(db), "--allow-root", str(workdir)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=60)
