"""The PostgreSQL store's own checks: its schema follows schema.sql step for step, `sessiond
migrate` applies it once, and `sessiond copy` moves an SQLite database over with every API
read the same before and after."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.cli import main
from server.store.pg import PG_SCHEMA_PATH, PgStore, inline, translate
from server.store.sqlite import SCHEMA_PATH, schema_steps
from tests import pg
from tests.conftest import app_client, make_settings, scripted_agent

_TITLE = re.compile(r"^-- step (\d+): (.*)$", re.MULTILINE)


def test_both_schemas_list_the_same_steps() -> None:
    sqlite_steps = _TITLE.findall(SCHEMA_PATH.read_text())
    pg_steps = _TITLE.findall(PG_SCHEMA_PATH.read_text())
    assert sqlite_steps == pg_steps
    assert len(schema_steps(PG_SCHEMA_PATH.read_text())) == len(sqlite_steps)


def test_the_dialect_numbers_marks_outside_literals() -> None:
    sql = "SELECT '?' , x FROM t WHERE a IS ? AND b = ? AND c = 'it''s ?'"
    assert translate(sql) == (
        "SELECT '?' , x FROM t WHERE a IS NOT DISTINCT FROM $1 AND b = $2 AND c = 'it''s ?'"
    )
    assert translate("INSERT OR IGNORE INTO t (a) VALUES (?)") == (
        "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
    )


def _sqlite_columns(path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(path) as conn:
        names = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith(("sqlite_", "message_search"))
        ]
        return {
            name: {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')} for name in names
        }


def test_migrate_makes_the_tables_and_columns_sqlite_has_and_runs_once(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    assert main(["migrate", "--db", str(db)]) == 0
    assert main(["migrate", "--db", pg_url]) == 0
    assert main(["migrate", "--db", pg_url]) == 0  # nothing left to do
    assert "schema up to date" in capsys.readouterr().out
    steps = pg.rows_of(pg_url, "SELECT step FROM schema_step ORDER BY step")
    assert [s for (s,) in steps] == list(range(1, len(schema_steps(SCHEMA_PATH.read_text())) + 1))
    rows = pg.rows_of(
        pg_url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name NOT IN ('schema_step', 'message_search')",
    )
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(str(table), set()).add(str(column))
    assert columns == _sqlite_columns(db)


async def _reads(http: Any) -> dict[str, Any]:
    """Every read the API has of what is stored."""
    seen: dict[str, Any] = {"agents": (await http.get("/agents")).json()}
    sessions = (await http.get("/sessions?include_archived=true&limit=100")).json()
    seen["sessions"] = sessions
    for session in sessions["data"]:
        sid = session["id"]
        for path in (f"/sessions/{sid}", f"/sessions/{sid}/messages", f"/sessions/{sid}/runs"):
            seen[path] = (await http.get(path)).json()
        for run in seen[f"/sessions/{sid}/runs"]["data"]:
            path = f"/sessions/{sid}/runs/{run['id']}"
            seen[path] = (await http.get(path)).json()
            seen[path + "/events"] = (await http.get(path + "/events")).text
    found = (await http.get("/sessions/search?q=alpha")).json()
    for result in found["data"]:  # BM25 and ts_rank score differently; the rest is the same
        result.pop("score")
    seen["search"] = found
    if session := sessions["data"]:
        seen["by-name"] = (await http.get("/sessions/named-one")).json()
    return seen


def test_copy_keeps_every_api_read(tmp_path: Path, pg_url: str) -> None:
    file_settings = make_settings(tmp_path)

    async def fill() -> dict[str, Any]:
        async with app_client(file_settings) as http:
            agent = (
                await http.post("/agents", json=scripted_agent([{"text": "alpha answer"}]))
            ).json()["id"]
            made = await http.post(
                "/sessions", json={"agent_id": agent, "name": "named-one", "tags": ["t"]}
            )
            sid = made.json()["id"]
            for word in ("alpha", "beta", "gamma"):
                sent = await http.post(f"/sessions/{sid}/message", json={"message": word})
                assert sent.status_code == 200, sent.text
            history = (await http.get(f"/sessions/{sid}/messages")).json()["data"]
            forked = await http.post(
                f"/sessions/{sid}/fork", json={"at_message_id": history[1]["id"], "name": "f"}
            )
            assert forked.status_code == 201, forked.text
            await http.post(f"/sessions/{forked.json()['id']}/message", json={"message": "delta"})
            other = (await http.post("/sessions", json={"agent_id": agent})).json()["id"]
            await http.post(f"/sessions/{other}/archive")
            await http.flush()
            return await _reads(http)

    before = asyncio.run(fill())
    assert len([k for k in before if k.endswith("/events")]) == 4
    assert main(["copy", "--from", file_settings.db, "--to", pg_url]) == 0

    async def read() -> dict[str, Any]:
        async with app_client(
            make_settings(tmp_path, db=pg_url, key_file=str(tmp_path / "k"))
        ) as http:
            return await _reads(http)

    after = asyncio.run(read())
    assert after == before
    # into a database that has sessions already: refused, nothing changed
    assert main(["copy", "--from", file_settings.db, "--to", pg_url]) == 1
    assert asyncio.run(read()) == before


def test_backup_and_doctor_refuse_a_postgresql_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://someone:secret@127.0.0.1:1/x"
    assert main(["backup", "/tmp/never-written.db", "--db", url]) == 2
    assert main(["doctor", "--db", url]) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "secret" not in err


def test_values_written_into_held_statements_read_back_as_they_were(pg_url: str) -> None:
    values = [
        "it's a \\ backslash; -- not a comment $1 '' ",
        "ünïcødé ✓",
        -7,
        2**62,
        -1.5e-9,
        None,
    ]
    statement = "SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::float8, $6::text"
    text = inline(statement, values)
    assert text is not None and "$" not in text.replace("$1 ", "")
    assert pg.rows_of(pg_url, text) == [tuple(values)]
    assert pg.rows_of(pg_url, inline("SELECT 1 - $1::bigint", [-1]) or "") == [(2,)]  # no `--`
    assert inline("SELECT $1", [float("nan")]) is None  # no literal: sent with its parameter
    assert pg.rows_of(pg_url, inline("SELECT $1::bytea", [b"\x00\xff'"]) or "") == [(b"\x00\xff'",)]
    assert inline("SELECT $1", [b"x" * 10_000]) is None  # big: sent as it is


def test_a_commit_sends_what_nobody_reads_with_the_next_read_or_the_commit(pg_url: str) -> None:
    """Writes held back ride with the next round trip: a commit of ten operations (an insert,
    a read of another table, an insert) costs a round trip each and two more, not five each;
    a rowcount asked for is there; a held insert that fails fails its own operation only."""

    async def go() -> None:
        store = PgStore(pg_url)
        await store.open()
        try:
            db = store.db

            def op(n: int):  # type: ignore[no-untyped-def]
                def write(conn: sqlite3.Connection) -> tuple[int, int]:
                    insert = (
                        "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                        "VALUES (?, ?, 'echo', 'now', 'now')"
                    )
                    name = "same" if n in (3, 4) else f"b{n}"  # the second "same" fails
                    conn.execute(insert, (f"a{n}", name))
                    (sessions,) = conn.execute("SELECT count(*) FROM sessions").fetchone()
                    conn.execute(insert, (f"c{n}", f"d{n}"))
                    changed = conn.execute(
                        "UPDATE agents SET updated_at = 'later' WHERE id IN (?, ?)",
                        (f"a{n}", f"c{n}"),
                    ).rowcount
                    return sessions, changed

                return write

            await db.flush()
            trips, commits = db.round_trips, db.commits
            results = await asyncio.gather(
                *(db.write(op(n)) for n in range(10)), return_exceptions=True
            )
            assert db.commits == commits + 1
            failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
            assert failed == [4], results
            assert all(r == (0, 2) for i, r in enumerate(results) if i != 4)
            rows = await db.fetchall("SELECT id FROM agents ORDER BY id")
            assert len(rows) == 18 and "a4" not in {r[0] for r in rows}
            # the failure made the commit again, an operation at a time: count a clean one
            trips = db.round_trips
            results = await asyncio.gather(*(db.write(op(n)) for n in range(10, 20)))
            assert results == [(0, 2)] * 10
            # each: a read (what was held goes first), a rowcount; and BEGIN, COMMIT
            assert db.round_trips - trips <= 2 * 10 + 2
        finally:
            await store.close()

    asyncio.run(go())


def test_a_commit_postgresql_rolled_back_is_never_reported_as_stored(pg_url: str) -> None:
    """An operation that swallows a refusal leaves PostgreSQL's transaction aborted, and its
    COMMIT then answers ROLLBACK: no operation of that commit may be told it was stored."""

    async def go() -> None:
        store = PgStore(pg_url)
        await store.open()
        try:
            db = store.db
            insert = (
                "INSERT INTO agents (id, name, provider, created_at, updated_at) "
                "VALUES (?, ?, 'echo', 'now', 'now') RETURNING id"
            )
            await db.write(lambda conn: conn.execute(insert, ("a1", "taken")).fetchone())

            def swallowing(conn: sqlite3.Connection) -> str:
                try:
                    conn.execute(insert, ("a2", "taken"))
                except sqlite3.IntegrityError:
                    return "swallowed"
                return "stored"

            def plain(conn: sqlite3.Connection) -> str:
                conn.execute(insert, ("a3", "other"))
                return "stored"

            # the swallowing one last: nothing after it meets the aborted transaction
            results = await asyncio.gather(
                db.write(plain), db.write(swallowing), return_exceptions=True
            )
            rows = {r[0] for r in await db.fetchall("SELECT id FROM agents")}
            if results[0] == "stored":
                assert "a3" in rows
            else:
                assert isinstance(results[0], Exception) and "a3" not in rows
        finally:
            await store.close()

    asyncio.run(go())
