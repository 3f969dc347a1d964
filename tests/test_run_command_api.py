"""run_command over the API: only a server started with --allow-run-command lets agents have
it; an agent stored with it runs without it elsewhere (not offered, a call does nothing)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings, scripted_agent
from tests.test_provider_anthropic import finish, start, text_block, tool_block
from tests.upstream import Reply, Upstream, anthropic_sse

TOUCH = {"tool_calls": [{"name": "run_command", "input": {"command": "touch made"}}]}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and error["field"] == "tools"
    assert "--allow-run-command" in error["message"]


def test_an_agent_with_run_command_needs_the_operators_flag(tmp_path: Path) -> None:
    body = scripted_agent([{"text": "hi"}], tools=["read_file", "run_command"])

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            refused(await http.post("/agents", json=body))
            plain = await http.post("/agents", json={**body, "name": "b", "tools": ["read_file"]})
            assert plain.status_code == 201, plain.text
            agent = plain.json()["id"]
            refused(await http.put(f"/agents/{agent}", json={"tools": ["run_command"]}))
            stored = (await http.get(f"/agents/{agent}")).json()
            assert stored["tools"] == ["read_file"]
        async with app_client(make_settings(tmp_path, allow_run_command=True)) as http:
            created = await http.post("/agents", json=body)
            assert created.status_code == 201, created.text
            changed = await http.put(f"/agents/{agent}", json={"tools": ["run_command"]})
            assert changed.status_code == 200, changed.text

    run(go())


async def stored_agent(tmp_path: Path, script: list[Any], **extra: Any) -> str:
    """An agent with run_command, stored by a server that allowed it."""
    body = scripted_agent(script, tools=["read_file", "run_command"], **extra)
    async with app_client(make_settings(tmp_path, allow_run_command=True)) as http:
        created = await http.post("/agents", json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


@pytest.mark.parametrize("route", ["message", "run", "run no_persistence"])
def test_a_stored_agent_with_run_command_cannot_run_it_without_the_flag(
    tmp_path: Path, route: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()

    async def go() -> None:
        agent = await stored_agent(tmp_path, [TOUCH, {"text": "ok"}])
        async with app_client(make_settings(tmp_path)) as http:
            if route == "message":
                session = await http.post(
                    "/sessions", json={"agent_id": agent, "work_dir": str(work)}
                )
                sid = session.json()["id"]
                answer = await http.post(f"/sessions/{sid}/message", json={"message": "go"})
            else:
                body = {"prompt": "go", "agent_id": agent, "work_dir": str(work)}
                body["no_persistence"] = route.endswith("no_persistence")
                answer = await http.post("/run", json=body)
            assert answer.status_code == 200, answer.text
            [call] = answer.json()["tool_calls"]
            assert call["name"] == "run_command" and call["is_error"]

    run(go())
    assert not (work / "made").exists()


def test_a_stored_agent_with_run_command_is_not_offered_it_without_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    work = tmp_path / "work"
    work.mkdir()

    async def go() -> None:
        async with Upstream() as upstream:
            calls = tool_block(0, "toolu_1", "run_command", json.dumps({"command": "touch made"}))
            upstream.enqueue(
                Reply(chunks=anthropic_sse(start(), *calls, *finish("tool_use"))),
                Reply(chunks=anthropic_sse(start(), *text_block(0, "ok"), *finish())),
            )
            body = {
                "name": "claude",
                "provider": "anthropic",
                "model": "claude-x",
                "tools": ["read_file", "run_command"],
                "options": {"base_url": upstream.url},
            }
            endpoint = [f"anthropic={upstream.url}"]  # the double is the operator's endpoint
            enabled = make_settings(tmp_path, allow_run_command=True, provider_base_urls=endpoint)
            async with app_client(enabled) as http:
                agent = (await http.post("/agents", json=body)).json()["id"]
            async with app_client(make_settings(tmp_path, provider_base_urls=endpoint)) as http:
                session = await http.post(
                    "/sessions", json={"agent_id": agent, "work_dir": str(work)}
                )
                sid = session.json()["id"]
                answer = await http.post(f"/sessions/{sid}/message", json={"message": "go"})
                assert answer.status_code == 200, answer.text
            offered = [[t["name"] for t in seen.body["tools"]] for seen in upstream.requests]
            assert offered == [["read_file"], ["read_file"]]
            [call] = answer.json()["tool_calls"]
            assert call["is_error"]

    run(go())
    assert not (work / "made").exists()
