"""openapi.yaml: a valid OpenAPI 3.1 document that lists exactly the app's routes, whose
request schemas carry the code's constraints, and whose response schemas the real app's
responses satisfy (driven in-process, one scenario per area)."""

from __future__ import annotations

import asyncio
import json
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from openapi_spec_validator import validate as validate_openapi
from starlette.routing import Route

from server import models, providers, tools
from server.api import agents, messages, response_input, sessions
from server.app import create_app
from server.config import Settings
from server.errors import ApiError
from tests.conftest import AppClient
from tests.spec import Frame, Spec, load_spec, operations

S = "/sessions/{session_id}"
JSON_BODY = {"content-type": "application/json"}
RUN = S + "/runs/{run_id}"
SCHEMAS = "#/components/schemas/"


# -- the document --------------------------------------------------------------------------
def test_spec_is_valid_openapi_3_1() -> None:
    spec = load_spec()
    assert spec["openapi"] == "3.1.0"
    validate_openapi(spec)


def app_operations(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(db=str(tmp_path / "t.db"), allow_roots=[str(tmp_path)]))
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        found |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return found


def test_spec_lists_exactly_the_app_routes(tmp_path: Path) -> None:
    in_app, in_spec = app_operations(tmp_path), operations(load_spec())
    assert sorted(in_app - in_spec) == [], "routes the spec does not document"
    assert sorted(in_spec - in_app) == [], "documented operations the app does not serve"


def test_path_parameters_match_the_templates() -> None:
    spec = Spec(closed=False)
    for path, item in spec.doc["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method in (m for m in item if m != "parameters"):
            listed = [*item.get("parameters", []), *item[method].get("parameters", [])]
            params = [spec.resolve(p, "")[0] for p in listed]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == names, f"{method} {path}"


def enum_of(name: str) -> list[Any]:
    values: list[Any] = load_spec()["components"]["schemas"][name]["enum"]
    return values


@pytest.mark.parametrize(
    ("schema", "values"),
    [
        ("Provider", providers.names()),
        ("BuiltinToolName", list(tools.BUILTIN)),
        ("RunStatus", list(typing.get_args(models.RunStatus))),
        ("SessionStatus", list(sessions.STATUSES)),
    ],
)
def test_enums_match_the_code(schema: str, values: list[str]) -> None:
    assert sorted(enum_of(schema)) == sorted(values)


def test_error_kinds_cover_every_api_error() -> None:
    kinds: set[str] = set()
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == "server.errors":  # not the SDK's own (it cannot reach a server)
            kinds.add(cls.type)
        pending += cls.__subclasses__()
    assert sorted(kinds - set(enum_of("ErrorKind"))) == []


# -- request bodies: the code's constraints, as msgspec states them --------------------------
FACETS = ("minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems")


Facets = set[tuple[str, str]]


def facets(schema: Any, lookup: Callable[[str], Any], seen: frozenset[str] = frozenset()) -> Facets:
    """Every constraint reachable from a schema, as (keyword, value) pairs."""
    if not isinstance(schema, dict):
        return set()
    found: Facets = {(k, json.dumps(schema[k])) for k in (*FACETS, "default") if k in schema}
    if "enum" in schema or "const" in schema:
        found.add(("enum", json.dumps(sorted(schema.get("enum", [schema.get("const")])))))
    if "$ref" in schema and schema["$ref"] not in seen:
        found |= facets(lookup(schema["$ref"]), lookup, seen | {schema["$ref"]})
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found |= facets(sub, lookup, seen)
    found |= facets(schema.get("items"), lookup, seen)
    return found


@pytest.mark.parametrize(
    ("struct", "name"),
    [
        (agents.CreateAgent, "CreateAgent"),
        (agents.UpdateAgent, "UpdateAgent"),
        (sessions.CreateSession, "CreateSession"),
        (sessions.UpdateSession, "UpdateSession"),
        (messages.MessageBody, "MessageBody"),
        (messages.ToolResultsBody, "ToolResultsBody"),
        (models.ToolResultBlock, "ToolResultInput"),
        (models.ClientTool, "ClientTool"),
        (response_input.ResponseBody, "ResponseCreate"),
    ],
)
def test_request_schemas_carry_the_code_constraints(struct: type, name: str) -> None:
    ref = "#/components/schemas/{name}"
    _, code_defs = msgspec.json.schema_components([struct], ref_template=ref)
    spec_defs = load_spec()["components"]["schemas"]
    code, documented = code_defs[struct.__name__], spec_defs[name]

    def code_lookup(r: str) -> Any:
        return code_defs[r.rsplit("/", 1)[1]]

    def spec_lookup(r: str) -> Any:
        return spec_defs[r.rsplit("/", 1)[1]]

    assert documented.get("additionalProperties") is False
    assert set(documented["properties"]) == set(code["properties"])
    assert set(documented.get("required", [])) == set(code.get("required", []))
    for field, schema in code["properties"].items():
        missing = facets(schema, code_lookup) - facets(documented["properties"][field], spec_lookup)
        assert not missing, f"{name}.{field}: the spec lacks {sorted(missing)}"


# -- real responses ------------------------------------------------------------------------
@asynccontextmanager
async def client(tmp_path: Path) -> AsyncIterator[AppClient]:
    settings = Settings(
        db=str(tmp_path / "t.db"), allow_roots=[str(tmp_path)], ping_s=0.05, event_flush_ms=5
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as http:
        yield http


def scripted(name: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    options = {"script": list(steps), **extra.pop("options", {})}
    return {"name": name, "provider": "scripted", "options": options, **extra}


def check_run_stream(spec: Spec, response: httpx.Response, path: str) -> list[Frame]:
    frames = spec.check(response, path)
    numbered = [f for f in frames if f.event != "ping"]
    assert all(f.id is None for f in frames if f.event == "ping")
    assert [f.id for f in numbered] == [str(i) for i in range(1, len(numbered) + 1)]
    assert numbered[-1].event == "done"
    return frames


def test_crud_responses_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            created = await http.post("/agents", json=scripted("a", {"text": "hi there"}))
            assert created.status_code == 201
            spec.check(created, "/agents")
            agent = created.json()
            a = f"/agents/{agent['id']}"
            spec.check(await http.get("/agents", params={"limit": 1}), "/agents")
            spec.check(await http.get("/agents/default"), "/agents/{agent_id}")
            put = await http.put(a, json={"system": "be brief", "tools": ["read_file"]})
            assert put.status_code == 200
            spec.check(put, "/agents/{agent_id}")
            spec.check(await http.get("/healthz"), "/healthz")

            body = {"agent_id": agent["id"], "name": "s-1", "tags": ["x"], "ttl_seconds": 60}
            made = await http.post("/sessions", json=body)
            assert made.status_code == 201
            spec.check(made, "/sessions")
            again = await http.post("/sessions", json={"name": "s-1", "if_exists": "resume"})
            assert again.status_code == 200
            spec.check(again, "/sessions")
            sid = made.json()["id"]
            listed = await http.get("/sessions", params={"tag": ["x"], "order": "created_at"})
            assert listed.json()["data"]
            spec.check(listed, "/sessions")
            spec.check(await http.get("/sessions/s-1"), S)
            patched = await http.patch(f"/sessions/{sid}", json={"title": "t", "work_dir": None})
            assert patched.status_code == 200
            spec.check(patched, S)
            spec.check(await http.put(f"/sessions/{sid}", json={}), S)
            spec.check(await http.get(f"/sessions/{sid}/messages"), S + "/messages")

            in_use = await http.delete(a)
            assert in_use.status_code == 409
            spec.check(in_use, "/agents/{agent_id}")
            gone = await http.delete(f"/sessions/{sid}")
            assert gone.status_code == 204
            spec.check(gone, S)
            deleted = await http.delete(a)
            assert deleted.status_code == 204
            spec.check(deleted, "/agents/{agent_id}")

    asyncio.run(go())


ERROR_CASES: list[tuple[str, str, dict[str, Any], str, int, str | None]] = [
    # method, url, request arguments, spec path, status, error.field
    ("GET", "/sessions/nope", {}, S, 404, None),
    ("GET", "/agents/nope", {}, "/agents/{agent_id}", 404, None),
    ("POST", "/sessions", {"json": {"colour": 1}}, "/sessions", 400, "colour"),
    ("POST", "/sessions", {"content": b'{"name": ', "headers": JSON_BODY}, "/sessions", 400, None),
    ("POST", "/sessions", {"content": b""}, "/sessions", 400, None),
    ("POST", "/sessions", {"content": b"{}"}, "/sessions", 415, None),
    ("POST", "/sessions", {"json": {"tags": [1]}}, "/sessions", 400, "tags[0]"),
    ("POST", "/sessions", {"json": {"name": "a b"}}, "/sessions", 400, "name"),
    ("GET", "/agents", {"params": {"limit": 0}}, "/agents", 400, "limit"),
    ("GET", "/agents", {"params": {"cursor": "zz"}}, "/agents", 400, "cursor"),
    ("POST", "/agents", {"json": {"name": "x"}}, "/agents", 400, "provider"),
    ("POST", "/agents", {"json": scripted("default")}, "/agents", 409, "name"),
    ("DELETE", "/agents/default", {}, "/agents/{agent_id}", 409, None),
    ("POST", "/sessions", {"json": {"agent_id": "no"}}, "/sessions", 404, None),
    ("POST", "/sessions/x/message", {"json": {"message": "hi"}}, S + "/message", 404, None),
    (
        "POST",
        "/sessions",
        {"content": b"{" + b" " * 2**20 + b"}", "headers": JSON_BODY},
        "/sessions",
        413,
        None,
    ),
]


def test_error_responses_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            sid = (await http.post("/sessions", json={})).json()["id"]
            blank = {"json": {"message": " "}}
            resume = {"params": {"last_event_id": "7"}}
            cases = [
                *ERROR_CASES,
                ("POST", f"/sessions/{sid}/runs", blank, S + "/runs", 400, "message"),
                ("GET", f"/sessions/{sid}/events", resume, S + "/events", 400, None),
            ]
            for method, url, kwargs, path, status, field in cases:
                response = await http.request(method, url, **kwargs)
                assert response.status_code == status, (method, url, response.text)
                spec.check(response, path)
                assert response.json()["error"].get("field") == field, (method, url)
            # Not operations of the spec, but the same error shape.
            for response in (await http.get("/nowhere"), await http.patch("/agents")):
                assert response.status_code in (404, 405)
                spec.validate(response.json(), SCHEMAS + "Error")

    asyncio.run(go())


def test_run_responses_and_events_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            agent = (await http.post("/agents", json=scripted("a", {"text": "hi there"}))).json()
            sid = (await http.post("/sessions", json={"agent_id": agent["id"]})).json()["id"]
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "hello"})
            assert sent.status_code == 200 and sent.json()["response"] == "hi there"
            spec.check(sent, S + "/message")
            run_id = sent.json()["run_id"]
            r = f"/sessions/{sid}/runs/{run_id}"
            history = await http.get(f"/sessions/{sid}/messages", params={"limit": 1})
            assert history.json()["next_cursor"] == "1"
            spec.check(history, S + "/messages")
            spec.check(await http.get(f"/sessions/{sid}/runs"), S + "/runs")
            spec.check(await http.get(r), RUN)
            spec.check(await http.post(f"{r}/cancel"), RUN + "/cancel")
            replay = await http.get(f"{r}/events")
            events = [f.event for f in check_run_stream(spec, replay, RUN + "/events")]
            assert events[0] == "message_start" and "text_delta" in events
            tail = await http.get(f"{r}/events", headers={"Last-Event-ID": "4"})
            assert spec.check(tail, RUN + "/events")[0].id == "5"

            streamed = await http.post(
                f"/sessions/{sid}/message/stream", json={"message": [{"type": "text", "text": "x"}]}
            )
            check_run_stream(spec, streamed, S + "/message/stream")
            missing = await http.get(f"/sessions/{sid}/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            assert missing.status_code == 404
            spec.check(missing, RUN)

            failing = scripted("f", {"text": "a b", "error": {"message": "boom"}})
            bad = (await http.post("/agents", json=failing)).json()
            failed = await http.post(
                f"/sessions/{sid}/message", json={"message": "hi", "agent_id": bad["id"]}
            )
            assert failed.status_code == 502
            spec.check(failed, S + "/message")
            assert failed.json()["error"]["run_id"]

    asyncio.run(go())


def test_tool_calls_and_client_tools_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            (tmp_path / "note.txt").write_text("hello")
            step: dict[str, Any] = {"tool_calls": [{"name": "list_files", "input": {}}]}
            lister = scripted("l", step, {"text": "done"}, tools=["list_files"])
            agent = (await http.post("/agents", json=lister)).json()
            body = {"agent_id": agent["id"], "work_dir": str(tmp_path)}
            sid = (await http.post("/sessions", json=body)).json()["id"]
            sent = await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            spec.check(sent, S + "/message")
            assert sent.json()["tool_calls"][0]["name"] == "list_files"
            run = await http.get(f"/sessions/{sid}/runs/{sent.json()['run_id']}")
            spec.check(run, RUN)
            assert run.json()["tool_calls"][0]["output_bytes"] > 0
            events = await http.get(f"/sessions/{sid}/runs/{sent.json()['run_id']}/events")
            frames = check_run_stream(spec, events, RUN + "/events")
            assert "tool_result" in {f.event for f in frames}
            spec.check(await http.get(f"/sessions/{sid}/messages"), S + "/messages")

            ask_call: dict[str, Any] = {"name": "ask", "input": {"q": "which?"}}
            ask = scripted("c", {"text": "let me ask", "tool_calls": [ask_call]})
            asker = (await http.post("/agents", json=ask)).json()
            tool = {"name": "ask", "input_schema": {"type": "object"}, "description": "ask"}
            body = {"message": "hi", "agent_id": asker["id"], "tools": [tool]}
            paused = await http.post(f"/sessions/{sid}/message", json=body)
            spec.check(paused, S + "/message")
            assert paused.json()["status"] == "requires_action"
            r = f"/sessions/{sid}/runs/{paused.json()['run_id']}"
            spec.check(await http.get(r), RUN)
            spec.check(await http.get(f"/sessions/{sid}"), S)
            results = RUN + "/tool_results"
            for wait in ("true", "false"):  # the script repeats: each resumed step asks again
                pending = (await http.get(r)).json()["pending_tool_calls"]
                answer = [{"type": "tool_result", "tool_use_id": pending[0]["id"], "content": "a"}]
                resumed = await http.post(
                    f"{r}/tool_results", params={"wait": wait}, json={"results": answer}
                )
                assert resumed.status_code == 200, resumed.text
                spec.check(resumed, results)
            stale = await http.post(f"{r}/tool_results", json={"results": answer})
            assert stale.status_code == 400 and stale.json()["error"]["field"] == "results"
            spec.check(stale, results)
            cancelled = await http.post(f"{r}/cancel")
            assert cancelled.json()["status"] == "cancelled"
            spec.check(cancelled, RUN + "/cancel")
            frames = check_run_stream(spec, await http.get(f"{r}/events"), RUN + "/events")
            kinds = {f.event for f in frames}
            assert {"input_json_delta", "requires_action", "tool_result", "error", "done"} <= kinds

    asyncio.run(go())


def test_busy_queued_and_idempotent_runs_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            slow = scripted("slow", {"text": "word " * 40}, options={"token_delay_ms": 25})
            agent = (await http.post("/agents", json=slow)).json()
            sid = (await http.post("/sessions", json={"agent_id": agent["id"]})).json()["id"]
            other = (await http.post("/sessions", json={"agent_id": agent["id"]})).json()["id"]
            key_name = "Idempotency-Key"
            key = {key_name: "k-1"}
            started = await http.post(f"/sessions/{sid}/runs", json={"message": "go"}, headers=key)
            assert started.status_code == 202
            spec.check(started, S + "/runs")
            run_id = started.json()["run_id"]
            same = await http.post(f"/sessions/{sid}/runs", json={"message": "go"}, headers=key)
            assert same.json()["run_id"] == run_id
            other_body = {"message": "not go"}
            reused = await http.post(f"/sessions/{sid}/runs", json=other_body, headers=key)
            assert reused.status_code == 422
            spec.check(reused, S + "/runs")
            clash = await http.post(f"/sessions/{other}/runs", json={"message": "go"}, headers=key)
            assert clash.status_code == 409 and clash.json()["error"]["type"] == "conflict"
            spec.check(clash, S + "/runs")
            runs = f"/sessions/{sid}/runs"
            too_long = await http.post(runs, json={"message": "go"}, headers={key_name: "k" * 256})
            assert too_long.status_code == 400
            spec.check(too_long, S + "/runs")

            busy = await http.post(f"/sessions/{sid}/message", json={"message": "now"})
            assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"] == {**busy.json()["error"], "run_id": run_id}
            spec.check(busy, S + "/message")
            body = {"message": "later", "if_busy": "queue"}
            queued = await http.post(f"/sessions/{sid}/runs", json=body)
            assert queued.json()["status"] == "queued" and queued.json()["queue_position"] == 1
            spec.check(queued, S + "/runs")
            q = f"/sessions/{sid}/runs/{queued.json()['run_id']}"
            spec.check(await http.get(q), RUN)
            spec.check(await http.get(f"/sessions/{sid}"), S)
            for path in (q, f"/sessions/{sid}/runs/{run_id}"):
                stopped = await http.post(f"{path}/cancel")
                assert stopped.json()["status"] == "cancelled"
                spec.check(stopped, RUN + "/cancel")
            spec.check(await http.get(f"/sessions/{sid}/runs"), S + "/runs")
            frames = check_run_stream(
                spec, await http.get(f"/sessions/{sid}/runs/{run_id}/events"), RUN + "/events"
            )
            assert frames[-1].data["status"] == "cancelled"

            paced = scripted("paced", {"text": "a b c"}, options={"token_delay_ms": 150})
            paced_id = (await http.post("/agents", json=paced)).json()["id"]
            body = {"message": "go", "agent_id": paced_id}
            live = await http.post(f"/sessions/{sid}/message/stream", json=body)
            frames = check_run_stream(spec, live, S + "/message/stream")
            assert "ping" in {f.event for f in frames}  # quiet for longer than ping_s

    asyncio.run(go())


def test_session_channel_matches_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            agent = (await http.post("/agents", json=scripted("a", {"text": "hi"}))).json()
            sid = (await http.post("/sessions", json={"agent_id": agent["id"]})).json()["id"]
            hub, attached = http.app.state.runner.hub, asyncio.Event()
            watch = hub.watch

            def watching_now(session_id: str) -> Any:
                attached.set()
                return watch(session_id)

            hub.watch = watching_now
            watching = asyncio.create_task(http.get(f"/sessions/{sid}/events"))
            await asyncio.wait_for(attached.wait(), 30)  # the channel is open before the run
            sent = (await http.post(f"/sessions/{sid}/message", json={"message": "x"})).json()
            # `done` is out when the message returns: the channel's end comes after it
            assert (await http.delete(f"/sessions/{sid}")).status_code == 204  # ends the channel
            frames = spec.check(await asyncio.wait_for(watching, 5), S + "/events")
            numbered = [f for f in frames if f.event != "ping"]
            assert [f.id for f in numbered][:2] == [f"{sent['run_id']}:1", f"{sent['run_id']}:2"]
            assert all(f.data["run_id"] == sent["run_id"] for f in numbered)
            assert numbered[-1].event == "done"

    asyncio.run(go())


V1 = "/v1/responses"
ONE = V1 + "/{response_id}"


def test_responses_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with client(tmp_path) as http:
            (tmp_path / "a.txt").write_text("x")
            tool_step: dict[str, Any] = {"text": "look", "tool_calls": [{"name": "list_files"}]}
            looker = scripted("r", tool_step, {"text": "done"}, tools=["list_files"])
            assert (await http.post("/agents", json=looker)).status_code == 201
            body = {"model": "r", "input": "hi", "work_dir": str(tmp_path), "metadata": {"a": "b"}}
            made = await http.post(V1, json=body)
            assert made.status_code == 200, made.text
            spec.check(made, V1)
            rid = made.json()["id"]
            types = [item["type"] for item in made.json()["output"]]
            assert types == ["message", "function_call", "function_call_output", "message"]
            spec.check(await http.get(f"{V1}/{rid}"), ONE)
            streamed = await http.post(V1, json={**body, "stream": True, "work_dir": None})
            frames = spec.check(streamed, V1)
            assert [f.id for f in frames] == [str(i) for i in range(len(frames))]
            assert frames[-1].event == "response.completed"
            replay = await http.get(f"{V1}/{rid}", params={"stream": "true", "starting_after": 3})
            assert spec.check(replay, ONE)[0].id == "4"
            spec.check(await http.post(f"{V1}/{rid}/cancel"), ONE + "/cancel")

            ask: dict[str, Any] = {"text": "ask", "tool_calls": [{"name": "ask", "input": {}}]}
            asker = scripted("c", ask, {"text": "thanks"})
            assert (await http.post("/agents", json=asker)).status_code == 201
            tool = {"type": "function", "name": "ask", "parameters": {"type": "object"}}
            paused = await http.post(V1, json={"model": "c", "input": "hi", "tools": [tool]})
            spec.check(paused, V1)
            call = paused.json()["output"][-1]
            answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "a"}
            body = {"model": "c", "input": [answer], "previous_response_id": paused.json()["id"]}
            resumed = await http.post(V1, json={**body, "stream": True})
            frames = spec.check(resumed, V1)
            assert frames[-1].data["response"]["id"].startswith(paused.json()["id"] + "_")

            slow = scripted("s", {"text": "w " * 500}, options={"token_delay_ms": 20})
            assert (await http.post("/agents", json=slow)).status_code == 201
            queued = await http.post(V1, json={"model": "s", "input": "go", "background": True})
            spec.check(queued, V1)
            assert queued.json()["status"] == "queued"
            cancelled = await http.post(f"{V1}/{queued.json()['id']}/cancel")
            spec.check(cancelled, ONE + "/cancel")
            assert cancelled.json()["status"] == "cancelled"
            frames = spec.check(await http.get(f"{V1}/{queued.json()['id']}?stream=true"), ONE)
            assert frames[-1].event == "response.failed"

            for method, url, kwargs, path, status in [
                ("GET", f"{V1}/nope", {}, ONE, 404),
                ("POST", V1, {"json": {"model": "r"}}, V1, 400),
                ("POST", V1, {"json": {"model": "nope", "input": "x"}}, V1, 404),
                (
                    "GET",
                    f"{V1}/{rid}",
                    {"params": {"stream": "true", "starting_after": "x"}},
                    ONE,
                    400,
                ),
            ]:
                response = await http.request(method, url, **kwargs)
                assert response.status_code == status, response.text
                spec.check(response, path)

    asyncio.run(go())
