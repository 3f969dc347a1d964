"""Turns and accounting: each run records its tool calls and usage, and a session's totals
always equal the sum over its runs, whatever the runs' ends (in-process app)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_client, make_settings, scripted_agent
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

TOOL_TURN = [
    {
        "text": "Looking.",
        "tool_calls": [
            {"name": "list_files", "input": {}},
            {"name": "read_file", "input": {"path": "missing.txt"}},
        ],
    },
    {"text": "Done looking."},
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def agent(http: Any, script: list[Any], **extra: Any) -> str:
    body = scripted_agent(
        script, name=f"a{time.monotonic_ns()}", tools=["list_files", "read_file"], **extra
    )
    return str((await http.post("/agents", json=body)).json()["id"])


async def all_runs(http: Any, sid: str) -> list[dict[str, Any]]:
    runs, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/sessions/{sid}/runs", params=params)).json()
        runs += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return runs


def test_session_totals_are_the_sum_over_its_runs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    slow = " ".join(f"w{i}" for i in range(2000))  # 20 s of words: cancelled long before

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            tools = await agent(http, TOOL_TURN)
            failing = await agent(
                http, [{"text": "one two three", "error": {"message": "down", "after_tokens": 2}}]
            )
            paced = await agent(http, [{"text": slow}], options={"token_delay_ms": 10})
            session = {"agent_id": tools, "work_dir": str(tmp_path)}
            sid = (await http.post("/sessions", json=session)).json()["id"]

            ok = await http.post(f"/sessions/{sid}/message", json={"message": "look"})
            assert ok.status_code == 200 and ok.json()["steps"] == 2
            failed = await http.post(
                f"/sessions/{sid}/message", json={"message": "fail", "agent_id": failing}
            )
            assert failed.status_code == 502
            started = await http.post(
                f"/sessions/{sid}/runs", json={"message": "slow", "agent_id": paced}
            )
            run_id = started.json()["run_id"]

            async def streaming() -> bool:  # some output to count before the cancel
                stored = await http.app.state.store.events.read(run_id, 0, 100)
                return any(row[2] == "text_delta" for row in stored)

            await until(streaming, "the paced run's first words")
            cancelled = await http.post(f"/sessions/{sid}/runs/{run_id}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            again = await http.post(f"/sessions/{sid}/message", json={"message": "again"})
            assert again.status_code == 200

            runs = await all_runs(http, sid)
            assert sorted(r["status"] for r in runs) == [
                "cancelled",
                "completed",
                "completed",
                "failed",
            ]
            record = (await http.get(f"/sessions/{sid}")).json()
            messages = (await http.get(f"/sessions/{sid}/messages?limit=1000")).json()["data"]
            assert record["turn_count"] == len(runs)
            assert record["message_count"] == len(messages)
            assert {m["run_id"] for m in messages} == {r["id"] for r in runs}
            for kind in ("input_tokens", "output_tokens"):
                assert record["usage"][kind] == sum(r["usage"][kind] for r in runs)
            assert all(r["usage"]["output_tokens"] > 0 for r in runs)

            detail = (await http.get(f"/sessions/{sid}/runs/{ok.json()['run_id']}")).json()
            listed, missing = detail["tool_calls"]
            assert (listed["name"], listed["input"], listed["is_error"]) == (
                "list_files",
                {},
                False,
            )
            assert listed["output_bytes"] > 0 and listed["duration_ms"] >= 0
            assert listed["step"] == missing["step"]
            assert missing["name"] == "read_file" and missing["is_error"] is True
            assert missing["input"] == {"path": "missing.txt"}
            assert detail["usage"] == ok.json()["usage"]

    run(go())
