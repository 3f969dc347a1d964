"""GET /metrics: read with prometheus_client's own parser, the series move by what a run did
(one run, two provider requests, one tool call, its tokens, the commits the store made, the
request by its route template); it takes an admin key with auth on unless public; two apps in
one process keep their own series."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server.api.keys import issue
from server.app import create_app
from tests.conftest import AppClient, app_client, make_settings, scripted_agent
from tests.sse import collect, typed
from tests.waiting import until

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
SCRIPT = [
    {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {}}]},
    {"text": "There is one file."},
]


def parse(text: str) -> Series:
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, **headers: str) -> Series:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def session_of(client: httpx.AsyncClient, tmp_path: Path, script: list[Any]) -> str:
    agent = await client.post("/agents", json=scripted_agent(script, tools=["list_files"]))
    assert agent.status_code == 201, agent.text
    body = {"agent_id": agent.json()["id"], "work_dir": str(tmp_path)}
    return str((await client.post("/sessions", json=body)).json()["id"])


def test_a_run_with_one_tool_call_moves_each_series_by_what_it_did(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            sid = await session_of(client, tmp_path, SCRIPT)
            await client.flush()
            store = client.app.state.store
            before, commits = await scrape(client), store.commits
            answer = await client.post(f"/sessions/{sid}/message", json={"message": "files?"})
            assert answer.status_code == 200, answer.text
            await client.flush()
            run = answer.json()
            after, made = await scrape(client), store.commits - commits

            def moved(name: str, **labels: str) -> float:
                return value(after, name, **labels) - value(before, name, **labels)

            assert run["status"] == "completed" and run["steps"] == 2
            assert moved("sessiond_runs_total", status="completed") == 1
            assert moved("sessiond_run_seconds_count") == 1
            assert moved("sessiond_provider_requests_total", provider="scripted", outcome="ok") == 2
            assert moved("sessiond_provider_first_token_seconds_count", provider="scripted") == 2
            assert moved("sessiond_tool_calls_total", tool="list_files", outcome="ok") == 1
            usage = run["usage"]
            assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
            tokens = "sessiond_tokens_total"
            assert moved(tokens, provider="scripted", direction="input") == usage["input_tokens"]
            assert moved(tokens, provider="scripted", direction="output") == usage["output_tokens"]
            # every commit the store made is one observation of each commit histogram
            assert made >= 1
            assert moved("sessiond_db_commit_seconds_count") == made
            assert moved("sessiond_db_commit_rows_count") == made
            assert moved("sessiond_db_commit_rows_sum") >= 4  # run, 4 messages, session…
            # the writer thread's CPU in those commits: some, and no more than their wall time
            cpu = moved("sessiond_db_writer_cpu_seconds_total")
            assert 0 < cpu <= moved("sessiond_db_commit_seconds_sum") + 0.01
            route = "/sessions/{session_id}/message"
            assert moved("sessiond_http_requests_total", route=route, status="200") == 1
            assert value(after, "sessiond_runs_active") == 0
            labels = {v for (_, labelset) in after for _, v in labelset}
            assert not any(sid in label for label in labels), "a raw path became a label"

    asyncio.run(go())


def test_a_failed_provider_request_counts_as_an_error(tmp_path: Path) -> None:
    script = [{"error": {"message": "upstream is down"}}]

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            sid = await session_of(client, tmp_path, script)
            before = await scrape(client)
            answer = await client.post(f"/sessions/{sid}/message", json={"message": "hi"})
            assert answer.status_code == 502, answer.text  # the run failed upstream
            after = await scrape(client)
            labels = {"provider": "scripted", "outcome": "error"}
            assert value(after, "sessiond_provider_requests_total", **labels) == 1 + value(
                before, "sessiond_provider_requests_total", **labels
            )
            assert value(after, "sessiond_runs_total", status="failed") == 1

    asyncio.run(go())


def test_events_sent_and_streams_open_follow_a_stream(live: Any, tmp_path: Path) -> None:
    """The session channel stays open past a run's `done`: it is counted open while it is,
    and every event it carried is counted sent (pings are not events)."""

    async def go() -> None:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            sid = await session_of(client, tmp_path, [{"text": "one two three four"}])
            before = await scrape(client)
            async with client.stream("GET", f"/sessions/{sid}/events") as response:

                async def counted(open_now: int) -> bool:
                    return value(await scrape(client), "sessiond_streams_open") == open_now

                await until(lambda: counted(1), "the stream to be counted open")
                answer = client.post(f"/sessions/{sid}/message", json={"message": "go"})
                got, done = await asyncio.gather(collect(response, "done"), answer)
                assert done.status_code == 200, done.text
            sent = [e for e in typed(got) if e.event != "ping"]
            await until(lambda: counted(0), "the stream to be counted closed")
            after = await scrape(client)
            events = "sessiond_events_sent_total"
            assert len(sent) >= 6
            assert value(after, events) - value(before, events) == len(sent)

    asyncio.run(go())


def test_metrics_need_an_admin_key_with_auth_on(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            store = client.app.state.store
            admin = (await issue(store.keys, "ops", "admin")).key
            write = (await issue(store.keys, "app", "write")).key

            async def on() -> bool:
                return (await client.get("/metrics")).status_code == 401

            await until(on, "auth to turn on")
            refused = await client.get("/metrics", headers={"authorization": f"Bearer {write}"})
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "forbidden"
            await scrape(client, authorization=f"Bearer {admin}")

        async with app_client(make_settings(tmp_path, metrics_public=True)) as client:
            await scrape(client)  # no key needed
            assert (await client.get("/sessions")).status_code == 401  # the rest still does

    asyncio.run(go())


def test_two_apps_in_one_process_count_apart(tmp_path: Path) -> None:
    async def go() -> None:
        first, second = create_app(make_settings(tmp_path / "a")), None
        second = create_app(make_settings(tmp_path / "b"))
        async with (
            first.router.lifespan_context(first),
            second.router.lifespan_context(second),
            AppClient(first) as one,
            AppClient(second) as two,
        ):
            for _ in range(3):
                assert (await one.get("/healthz")).status_code == 200
            route = {"route": "/healthz", "status": "200"}
            assert value(await scrape(one), "sessiond_http_requests_total", **route) == 3
            assert value(await scrape(two), "sessiond_http_requests_total", **route) == 0

    asyncio.run(go())
