"""Client-side tools (the run pauses until the client answers), parallel calls, max_steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer
from tests.sse import collect, typed

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "executor": "client",
}
SCRIPT = [
    {
        "text": "Checking.",
        "tool_calls": [
            {"name": "list_files", "input": {}},
            {"name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {"text": "It is sunny in Paris."},
]


def session_with(url: str, tmp_path: Path, script: list[Any], tools: list[Any], **kw: Any) -> str:
    agent = scripted_agent(script, tools=tools, name=f"a{len(script)}{len(tools)}{kw}", **kw)
    created = httpx.post(f"{url}/agents", json=agent)
    assert created.status_code == 201, created.text
    body = {"agent_id": created.json()["id"], "work_dir": str(tmp_path)}
    return str(httpx.post(f"{url}/sessions", json=body).json()["id"])


async def stream(method: str, url: str, body: Any, until: str = "done") -> list[Any]:
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(method, url, json=body) as response,
    ):
        assert response.status_code == 200, await response.aread()
        return typed(await collect(response, until))


def test_client_tool_round_trip_streamed(live: ThreadServer, tmp_path: Path) -> None:
    sid = session_with(live.url, tmp_path, SCRIPT, ["list_files", WEATHER])
    base = f"{live.url}/sessions/{sid}"
    first = asyncio.run(stream("POST", f"{base}/message/stream", {"message": "weather?"}))
    kinds = [e.event for e in first]
    assert kinds[-3:] == ["tool_result", "requires_action", "done"]
    action = first[-2].json
    [call] = action["tool_calls"]
    assert call["name"] == "get_weather" and call["input"] == {"city": "Paris"}
    done = first[-1].json
    assert done["stop_reason"] == "requires_action" and done["status"] == "requires_action"
    run_id = done["run_id"]
    assert action["run_id"] == run_id
    assert httpx.get(f"{base}/runs/{run_id}").json()["status"] == "requires_action"
    assert httpx.get(base).json()["status"] == "requires_action"

    results = {"results": [{"tool_use_id": call["id"], "content": "sunny, 21 C"}]}
    second = asyncio.run(stream("POST", f"{base}/runs/{run_id}/tool_results", results))
    assert second[0].event == "tool_result" and second[0].json["content"] == "sunny, 21 C"
    assert int(second[0].id) == int(first[-1].id) + 1
    assert second[-1].json["status"] == "completed"
    history = httpx.get(f"{base}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    uses = [b["id"] for b in history[1]["content"] if b["type"] == "tool_use"]
    assert [b["tool_use_id"] for b in history[2]["content"]] == uses
    run = httpx.get(f"{base}/runs/{run_id}").json()
    assert run["status"] == "completed" and run["steps"] == 2
    assert [c["name"] for c in run["tool_calls"]] == ["list_files"]
    # the replay of a finished run holds both parts and closes after the last `done`
    replay = asyncio.run(stream("GET", f"{base}/runs/{run_id}/events", None, until="-"))
    assert [e.id for e in replay] == [e.id for e in first + second]


def test_client_tool_blocking_and_restart_while_paused(live: ThreadServer, tmp_path: Path) -> None:
    sid = session_with(live.url, tmp_path, SCRIPT, ["list_files", WEATHER])
    base = f"{live.url}/sessions/{sid}"
    (tmp_path / "forecast.txt").write_text("clouds\n")
    paused = httpx.post(f"{base}/message", json={"message": "weather?"}).json()
    assert paused["stop_reason"] == "requires_action" and paused["status"] == "requires_action"
    [call] = paused["pending_tool_calls"]
    # the server tool of the paused step already ran: its output is shown, the client's is not
    listed, waiting = paused["tool_calls"]
    assert listed["name"] == "list_files" and not listed["is_error"]
    assert "forecast.txt" in listed["output"]
    assert waiting["id"] == call["id"] and waiting["output"] is None
    live.restart()
    run_url = f"{base}/runs/{paused['run_id']}"
    assert httpx.get(run_url).json()["status"] == "requires_action"
    answer = {"results": [{"tool_use_id": call["id"], "content": "rain", "is_error": False}]}
    done = httpx.post(f"{run_url}/tool_results?wait=true", json=answer, timeout=30)
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["response"] == "It is sunny in Paris." and result["status"] == "completed"
    assert {c["name"]: c["output"] for c in result["tool_calls"]}["get_weather"] == "rain"
    again = httpx.post(f"{run_url}/tool_results?wait=true", json=answer)
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


def test_bad_tool_results_are_400_and_change_nothing(live: ThreadServer, tmp_path: Path) -> None:
    sid = session_with(live.url, tmp_path, SCRIPT, ["list_files", WEATHER])
    base = f"{live.url}/sessions/{sid}"
    paused = httpx.post(f"{base}/message", json={"message": "weather?"}).json()
    call_id = paused["pending_tool_calls"][0]["id"]
    url = f"{base}/runs/{paused['run_id']}/tool_results?wait=true"
    cases = [
        [],
        [{"tool_use_id": "nope", "content": "x"}],
        [{"tool_use_id": call_id, "content": "x"}, {"tool_use_id": call_id, "content": "y"}],
    ]
    for results in cases:
        response = httpx.post(url, json={"results": results})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == "results"
    assert httpx.get(f"{base}/messages").json()["data"][-1]["role"] == "assistant"
    assert httpx.get(f"{base}/runs/{paused['run_id']}").json()["status"] == "requires_action"


def test_new_message_resolves_a_paused_run(live: ThreadServer, tmp_path: Path) -> None:
    script = [SCRIPT[0], {"text": "fine"}]
    sid = session_with(live.url, tmp_path, script, ["list_files", WEATHER])
    base = f"{live.url}/sessions/{sid}"
    paused = httpx.post(f"{base}/message", json={"message": "weather?"}).json()
    later = httpx.post(f"{base}/message", json={"message": "never mind"})
    assert later.status_code == 200, later.text
    run = httpx.get(f"{base}/runs/{paused['run_id']}").json()
    assert run["status"] == "cancelled"
    history = httpx.get(f"{base}/messages").json()["data"]
    results = history[2]["content"]
    assert [r["is_error"] for r in results] == [False, True]
    assert "no result supplied" in results[1]["content"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "user", "assistant"]


def test_per_message_client_tools(live: ThreadServer, tmp_path: Path) -> None:
    script = [{"tool_calls": [{"name": "get_weather", "input": {"city": "Oslo"}}]}]
    sid = session_with(live.url, tmp_path, script, [])
    base = f"{live.url}/sessions/{sid}"
    result = httpx.post(f"{base}/message", json={"message": "?", "tools": [WEATHER]}).json()
    assert result["pending_tool_calls"][0]["name"] == "get_weather"


@pytest.fixture
def commands(tmp_path: Path) -> Iterator[ThreadServer]:
    """A server whose agents may have run_command (unconfined where bubblewrap is missing)."""
    settings = make_settings(tmp_path, allow_run_command=True, allow_unsandboxed_commands=True)
    server = ThreadServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def test_parallel_calls_store_results_in_call_order(commands: ThreadServer, tmp_path: Path) -> None:
    live = commands
    calls = [
        {"name": "run_command", "input": {"command": f"sleep {s}; echo done-{s}"}}
        for s in ("0.6", "0.3", "0")
    ]
    sid = session_with(live.url, tmp_path, [{"tool_calls": calls}, {"text": "ok"}], ["run_command"])
    events = asyncio.run(
        stream("POST", f"{live.url}/sessions/{sid}/message/stream", {"message": "go"})
    )
    finished = [e.json["content"] for e in events if e.event == "tool_result"]
    assert [line.split("\n")[0] for line in finished] == ["done-0", "done-0.3", "done-0.6"]
    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    stored = [r["content"].split("\n")[0] for r in history[2]["content"]]
    assert stored == ["done-0.6", "done-0.3", "done-0"]
    run = httpx.get(f"{live.url}/sessions/{sid}/runs").json()["data"][0]
    durations = [c["duration_ms"] for c in run["tool_calls"]]
    assert durations[0] >= 500 and durations[2] < 500
    assert sum(durations) > 0 and max(durations) < 1500  # they ran at the same time


def test_max_steps_ends_with_a_valid_history(live: ThreadServer, tmp_path: Path) -> None:
    loop = [{"tool_calls": [{"name": "list_files", "input": {}}]}]
    sid = session_with(live.url, tmp_path, loop, ["list_files"], max_steps=3)
    result = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "go"}).json()
    assert result["stop_reason"] == "max_steps" and result["steps"] == 3
    assert len(result["tool_calls"]) == 3
    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user"] + ["assistant", "user"] * 3
    assert history[-1]["content"][0]["type"] == "tool_result"


def test_unknown_tool_and_bad_input_are_tool_errors(live: ThreadServer, tmp_path: Path) -> None:
    script = [
        {
            "tool_calls": [
                {"name": "rm_rf", "input": {}},
                {"name": "read_file", "input": {"path": "../etc/passwd"}},
                {"name": "read_file", "input": {"path": 5}},
            ]
        },
        {"text": "sorry"},
    ]
    sid = session_with(live.url, tmp_path, script, ["read_file"])
    result = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "go"}).json()
    assert result["response"] == "sorry"
    outputs = [(c["is_error"], c["output"]) for c in result["tool_calls"]]
    assert all(is_error for is_error, _ in outputs)
    assert "unknown tool 'rm_rf'" in outputs[0][1]
    assert "outside" in outputs[1][1]
    assert "path" in outputs[2][1]
