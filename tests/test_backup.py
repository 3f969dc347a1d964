"""`sessiond backup`: a copy taken while a server serves concurrent turns is a sound
database holding every run completed before the copy began."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from server.cli import main
from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer
from tests.waiting import wait_until

CLIENTS = 4


class Load:
    """Clients sending turns, each on its own session, until told to stop."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.completed: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def done(self) -> list[str]:
        with self.lock:
            return list(self.completed)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            script = [{"text": "noted, and here is a longer answer to store"}]
            agent = (await client.post("/agents", json=scripted_agent(script))).json()["id"]
            await asyncio.gather(*(self._client(client, agent) for _ in range(CLIENTS)))

    async def _client(self, client: httpx.AsyncClient, agent: str) -> None:
        body = {"agent_id": agent, "work_dir": str(self.tmp_path)}
        sid = (await client.post("/sessions", json=body)).json()["id"]
        while not self.stop.is_set():
            answer = await client.post(f"/sessions/{sid}/message", json={"message": "again"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "completed"
            with self.lock:
                self.completed.append(answer.json()["run_id"])


def test_a_backup_during_concurrent_turns_is_sound_and_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    server = ThreadServer(settings).start()
    load = Load(server.url, tmp_path)
    copy = tmp_path / "backups" / "copy.db"
    try:
        load.thread.start()
        wait_until(lambda: len(load.done()) >= 40, "some turns to complete")
        before = load.done()  # completed, so committed, before the copy began
        assert main(["backup", str(copy), "--db", settings.db]) == 0
        wait_until(lambda: len(load.done()) > len(before) + 10, "turns to go on after it")
    finally:
        load.stop.set()
        load.thread.join(30)
        server.stop()
    printed = capsys.readouterr().out
    assert f"bytes to {copy}" in printed and "copied " in printed

    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = dict(conn.execute("SELECT id, status FROM runs").fetchall())
        messages = {
            row[0] for row in conn.execute("SELECT run_id FROM messages WHERE role = 'assistant'")
        }
        rows = sum(
            conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for table in ("agents", "sessions", "messages", "runs", "events", "api_keys")
        )
    missing = [run for run in before if stored.get(run) != "completed" or run not in messages]
    assert missing == [], f"{len(missing)} runs completed before the backup are not in it"
    copied = int(printed.split("copied ", 1)[1].split(" ", 1)[0])
    assert copied >= rows  # the tables named here, and the few others


def test_a_backup_never_overwrites_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    taken = tmp_path / "taken.db"
    taken.write_bytes(b"mine")
    assert main(["backup", str(taken), "--db", str(db)]) == 1
    assert taken.read_bytes() == b"mine"
    assert "exists already" in capsys.readouterr().err
    assert main(["backup", str(tmp_path / "x.db"), "--db", str(tmp_path / "none.db")]) == 1
    assert "no database at" in capsys.readouterr().err
