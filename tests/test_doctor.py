"""`sessiond doctor`: a healthy database passes every check; each database broken on purpose
is found out by the check that names its problem, and the exit status says so."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.cli import main
from server.store.lock import DatabaseLock
from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "executor": "client",
}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database a server wrote and closed: a turn with a server tool call, and a session
    paused for a client tool (its last tool_use waits for an answer, and that is fine)."""
    tmp_path = tmp_path_factory.mktemp("doctor")
    (tmp_path / "a.txt").write_text("x")
    settings = make_settings(tmp_path)
    server = ThreadServer(settings).start()
    try:
        for script, tools in (
            ([{"tool_calls": [{"name": "list_files"}]}, {"text": "done"}], ["list_files"]),
            ([{"tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]}], [WEATHER]),
        ):
            agent = scripted_agent(script, tools=tools, name=f"a{len(tools)}{len(script)}")
            made = httpx.post(f"{server.url}/agents", json=agent).json()["id"]
            body = {"agent_id": made, "work_dir": str(tmp_path)}
            sid = httpx.post(f"{server.url}/sessions", json=body).json()["id"]
            answer = httpx.post(f"{server.url}/sessions/{sid}/message", json={"message": "go"})
            assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "requires_action"
    finally:
        server.stop()
    return Path(settings.db)


def doctor(db: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, str]]:
    code = main(["doctor", "--db", str(db), *extra])
    found = {}
    for line in capsys.readouterr().out.splitlines()[:-1]:
        verdict, rest = line.split(maxsplit=1)
        name, detail = rest.split(": ", 1)
        found[name] = f"{verdict}: {detail}"
    return code, found


def broken(healthy: Path, tmp_path: Path, damage: Callable[[sqlite3.Connection], None]) -> Path:
    db = tmp_path / "broken.db"
    shutil.copyfile(healthy, db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        damage(conn)
    finally:
        conn.close()
    return db


CHECKS = ["schema", "integrity", "wal", "stuck runs", "orphan messages", "histories"]


def test_a_healthy_database_passes(healthy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = doctor(healthy, capsys)
    assert list(found) == CHECKS
    assert all(v.startswith("ok:") for v in found.values()), found
    assert code == 0


def _old_schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA user_version = 1")


def _bad_index(conn: sqlite3.Connection) -> None:
    # the index's entries stay those of run_id while its definition says created_at
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_schema SET sql = 'CREATE INDEX messages_by_run ON messages (created_at)' "
        "WHERE name = 'messages_by_run'"
    )


def _stuck_run(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE runs SET status = 'running' WHERE status = 'completed'")


def _orphan(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE messages SET run_id = '01NOSUCHRUN' WHERE role = 'assistant'")


def _unanswered(conn: sqlite3.Connection) -> None:
    conn.execute(
        'UPDATE messages SET content = \'[{"type":"text","text":"no result"}]\' '
        "WHERE role = 'user' AND content LIKE '%tool_result%'"
    )


@pytest.mark.parametrize(
    ("damage", "check", "said"),
    [
        (_old_schema, "schema", "schema step 1 of"),
        (_bad_index, "integrity", "integrity_check:"),
        (_stuck_run, "stuck runs", "left running or queued with no server alive"),
        (_orphan, "orphan messages", "name a run that does not exist"),
        (_unanswered, "histories", "a model would refuse"),
    ],
)
def test_each_problem_is_found(
    healthy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[sqlite3.Connection], None],
    check: str,
    said: str,
) -> None:
    code, found = doctor(broken(healthy, tmp_path, damage), capsys)
    assert code == 1
    assert found[check].startswith("problem:") and said in found[check], found
    others = {k: v for k, v in found.items() if k != check}
    assert all(v.startswith("ok:") for v in others.values()), found


def test_a_large_wal_is_a_problem(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = broken(healthy, tmp_path, lambda conn: None)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("PRAGMA wal_autocheckpoint = 0")  # the log grows while it is open
        holder.execute("UPDATE runs SET steps = steps + 1")
        code, found = doctor(db, capsys, "--max-wal-bytes", "1024")
        assert code == 1 and found["wal"].startswith("problem:"), found
        code, found = doctor(db, capsys)  # the default limit is far above this
        assert code == 0 and found["wal"].startswith("ok:"), found


@contextlib.contextmanager
def served(db: Path) -> Iterator[None]:
    lock = DatabaseLock(str(db)).acquire()
    try:
        yield
    finally:
        lock.release()


def test_running_runs_of_a_live_server_are_no_problem(
    healthy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = broken(healthy, tmp_path, _stuck_run)
    with served(db):
        code, found = doctor(db, capsys)
    assert code == 0 and "by the server that holds the database" in found["stuck runs"]


def test_no_database_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = doctor(tmp_path / "none.db", capsys)
    assert code == 1 and found["database"].startswith("problem: no database at")
    assert not (tmp_path / "none.db").exists()
