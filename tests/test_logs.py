"""Log lines: one JSON object per request and one per run's end, nothing per event; each
request's id taken from X-Request-Id or made, and sent back; no key and no message content
in any line unless --log-content."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

from server.api.keys import issue
from server.cli.logs import JsonFormatter, TextFormatter, chosen
from tests.conftest import app_client, make_settings, scripted_agent
from tests.waiting import until

MARKER = "PAPAYAWHIP42"
SCRIPT = [
    {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {}}]},
    {"text": "one two three four five six seven eight"},
]


def exchange(tmp_path: Path, **settings: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """With auth on: a blocking turn and a streamed one, the first with a request id of the
    client's. Returns the key, what the log got, and what the client saw."""
    (tmp_path / "a.txt").write_text("x")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    seen: dict[str, Any] = {}

    async def go() -> str:
        async with app_client(make_settings(tmp_path, **settings)) as client:
            key = (await issue(client.app.state.store.keys, "k", "admin")).key
            client.headers["authorization"] = f"Bearer {key}"
            await until(
                lambda: client.app.state.keys.enabled(), "auth to turn on after the first key"
            )
            agent = await client.post("/agents", json=scripted_agent(SCRIPT, tools=["list_files"]))
            body = {"agent_id": agent.json()["id"], "work_dir": str(tmp_path)}
            sid = (await client.post("/sessions", json=body)).json()["id"]
            await client.flush()
            logging.getLogger().addHandler(handler)
            try:
                message = {"message": f"please list the {MARKER} files"}
                blocking = await client.post(
                    f"/sessions/{sid}/message", json=message, headers={"x-request-id": "ops-1"}
                )
                streamed = await client.post(f"/sessions/{sid}/message/stream", json=message)
                await client.flush()
            finally:
                logging.getLogger().removeHandler(handler)
            seen.update(
                sid=sid,
                blocking=blocking,
                streamed=streamed,
                events=streamed.text.count("\nevent: "),
            )
            return key

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        key = asyncio.run(go())
    finally:
        root.setLevel(level)
    return key, [json.loads(line) for line in out.getvalue().splitlines()], seen


def test_a_line_per_request_and_per_run_with_their_fields(tmp_path: Path) -> None:
    _, logged, seen = exchange(tmp_path)
    requests = [line for line in logged if line["logger"] == "sessiond.http"]
    runs = [line for line in logged if line["message"] == "run ended"]
    assert len(requests) == 2 and len(runs) == 2, logged
    assert seen["events"] > 10  # a stream of many events still logged one line
    for line in logged:
        assert {"time", "level", "message"} <= set(line)
    blocking, streamed = requests
    assert blocking["request_id"] == "ops-1"
    assert seen["blocking"].headers["x-request-id"] == "ops-1"
    made = seen["streamed"].headers["x-request-id"]
    assert streamed["request_id"] == made and made != "ops-1" and len(made) >= 16
    for line, route in ((blocking, "message"), (streamed, "message/stream")):
        assert line["message"] == f"POST /sessions/{{session_id}}/{route} 200"
        assert line["method"] == "POST"
        assert line["route"] == f"/sessions/{{session_id}}/{route}"
        assert line["status"] == 200
        assert line["session_id"] == seen["sid"]
        assert line["duration_ms"] >= 0
        assert line["level"] == "info"
    assert blocking["run_id"] == seen["blocking"].json()["run_id"]
    assert streamed["run_id"] == seen["streamed"].headers["sessiond-run-id"]
    for run, request in zip(runs, requests, strict=True):
        assert run["run_id"] == request["run_id"] and run["session_id"] == seen["sid"]
        assert run["provider"] == "scripted" and run["status"] == "completed"
        assert run["input_tokens"] > 0 and run["output_tokens"] > 0
        assert run["steps"] == 2 and run["duration_ms"] >= 0


def test_no_key_and_no_message_content_in_any_line(tmp_path: Path) -> None:
    key, logged, _ = exchange(tmp_path)
    text = "\n".join(json.dumps(line) for line in logged)
    assert logged and key not in text and key[-12:] not in text
    assert MARKER not in text


def test_log_content_adds_the_message_and_tool_inputs_but_never_the_key(tmp_path: Path) -> None:
    key, logged, _ = exchange(tmp_path, log_content=True)
    [run, _] = [line for line in logged if line["message"] == "run ended"]
    assert MARKER in json.dumps(run["content"])
    assert run["tool_calls"] == [{"tool": "list_files", "input": {}}]
    assert key not in "\n".join(json.dumps(line) for line in logged)


def test_text_lines_carry_the_fields_as_pairs() -> None:
    record = logging.LogRecord("sessiond.http", logging.INFO, "", 0, "GET /healthz 200", (), None)
    record.fields = {"request_id": "r1", "duration_ms": 0.5, "run_id": None}
    text = TextFormatter().format(record)
    assert text.endswith("INFO sessiond.http: GET /healthz 200 request_id=r1 duration_ms=0.5")


def test_json_unless_stdout_is_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert chosen(None, io.StringIO()) == "json"
    assert chosen(None, Terminal()) == "text"
    assert chosen("json", Terminal()) == "json"
    assert chosen("text", io.StringIO()) == "text"
