"""The server's provider keys belong to the operator: they go only to the endpoints the
operator configured for their provider, and an agent's options can name neither another
endpoint for them nor an arbitrary environment variable to read.

A client that controls an agent's `options` points `base_url` at a loopback listener of its
own (a plain HTTP server that records every request, raw) and `api_key_env` at variables it
should not read; the listener must never see a key or any other variable's value."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import config
from server.cli.commands import build_parser
from tests.conftest import app_client, make_settings, scripted_agent
from tests.upstream import anthropic_sse, openai_sse

ANTHROPIC_KEY = "sk-ant-server-key-0123456789abcdef"
OPENAI_KEY = "sk-openai-server-key-0123456789abcdef"
DB_PASSWORD = "db-password-never-to-leave-9876543210"
TEAM_KEY = "team-key-the-operator-allows-24680"
SECRETS = (ANTHROPIC_KEY, OPENAI_KEY, DB_PASSWORD)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def anthropic_hello() -> list[bytes]:
    usage = {"input_tokens": 3, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}
    return anthropic_sse(
        {"type": "message_start", "message": {**message, "content": [], "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
        {"type": "message_stop"},
    )


def openai_hello() -> list[bytes]:
    chunk = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    end = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return openai_sse(chunk, end)


class Listener:
    """A plain HTTP server on loopback that records every request (request line, headers and
    body, as received) and answers each with a short reply in the provider's wire format."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                head = f"{self.requestline}\r\n{self.headers}".encode("latin-1")
                listener.raw.append(head + body)
                listener.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = b"".join(anthropic_hello() if "/messages" in self.path else openai_hello())
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(reply)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def leaked(self) -> list[str]:
        seen = b"\n".join(self.raw)
        return [secret for secret in SECRETS if secret.encode() in seen]


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(autouse=True)
def server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's environment: both providers' keys and an unrelated secret."""
    for name in ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("MY_DB_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("TEAM_KEY", TEAM_KEY)


def root_of(provider: str, url: str) -> str:
    return url if provider == "anthropic" else f"{url}/v1"


_names = itertools.count()


def http_agent(provider: str, **options: Any) -> dict[str, Any]:
    return {"name": f"{provider}-{next(_names)}", "provider": provider, "options": options}


async def say_hi(client: Any, agent_id: str) -> Any:
    session = await client.post("/sessions", json={"agent_id": agent_id})
    assert session.status_code == 201, session.text
    return await client.post(f"/sessions/{session.json()['id']}/message", json={"message": "hi"})


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_clients_base_url_never_receives_the_servers_key(
    tmp_path: Path, listener: Listener, provider: str
) -> None:
    async with app_client(make_settings(tmp_path)) as client:
        agent = http_agent(provider, base_url=root_of(provider, listener.url))
        created = await client.post("/agents", json=agent)
        assert created.status_code == 201, created.text
        sent = await say_hi(client, created.json()["id"])
        assert listener.leaked() == []
        if provider == "openai":  # keyless, as to any local server
            assert sent.status_code == 200, sent.text
            assert len(listener.raw) == 1 and "authorization" not in listener.headers[0]
        else:  # Claude's API needs a key, and the server's is not for this endpoint
            assert sent.status_code == 422, sent.text
            assert sent.json()["error"]["type"] == "agent_unusable"
            assert "--provider-base-url" in sent.json()["error"]["message"]
            assert listener.raw == []
        shown = (await client.get(f"/agents/{created.json()['id']}")).json()
        assert shown["usable"] is (provider == "openai")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "named", ["MY_DB_PASSWORD", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "PATH", "TEAM_KEY"]
)
async def test_api_key_env_cannot_name_a_variable_the_operator_has_not_allowed(
    tmp_path: Path, listener: Listener, provider: str, named: str
) -> None:
    """Not another variable, nor a provider key variable sent to the client's own endpoint;
    refused on create and on update, so nothing is ever sent."""
    async with app_client(make_settings(tmp_path)) as client:
        agent = http_agent(provider, base_url=root_of(provider, listener.url), api_key_env=named)
        created = await client.post("/agents", json=agent)
        assert created.status_code == 400, created.text
        assert created.json()["error"]["field"] == "options"
        assert named in created.json()["error"]["message"]
        plain = await client.post("/agents", json=http_agent(provider))
        assert plain.status_code == 201, plain.text
        changed = await client.put(
            f"/agents/{plain.json()['id']}",
            json={"options": {"base_url": listener.url, "api_key_env": named}},
        )
        assert changed.status_code == 400, changed.text
        assert changed.json()["error"]["field"] == "options"
        assert listener.raw == [] and listener.leaked() == []


async def test_a_provider_key_variable_of_another_provider_is_refused_even_at_the_default(
    tmp_path: Path,
) -> None:
    async with app_client(make_settings(tmp_path, agent_key_env=["*"])) as client:
        created = await client.post(
            "/agents", json=http_agent("openai", api_key_env="ANTHROPIC_API_KEY")
        )
        assert created.status_code == 400, created.text
        own = await client.post("/agents", json=http_agent("openai", api_key_env="OPENAI_API_KEY"))
        assert own.status_code == 201, own.text  # its own key, to its own endpoint


async def test_operator_allowed_variables_are_the_agents_own_keys(
    tmp_path: Path, listener: Listener
) -> None:
    """`--agent-key-env TEAM_*`: an agent may name TEAM_KEY, which goes to its base_url."""
    settings = make_settings(tmp_path, agent_key_env=["TEAM_*"])
    async with app_client(settings) as client:
        for provider in ("anthropic", "openai"):
            agent = http_agent(
                provider, base_url=root_of(provider, listener.url), api_key_env="TEAM_KEY"
            )
            created = await client.post("/agents", json=agent)
            assert created.status_code == 201, created.text
            sent = await say_hi(client, created.json()["id"])
            assert sent.status_code == 200, sent.text
        refused = await client.post(
            "/agents",
            json=http_agent("openai", base_url=listener.url, api_key_env="MY_DB_PASSWORD"),
        )
        assert refused.status_code == 400
    assert listener.headers[0]["x-api-key"] == TEAM_KEY
    assert listener.headers[1]["authorization"] == f"Bearer {TEAM_KEY}"
    assert listener.leaked() == []


async def test_a_stored_agent_whose_variable_is_no_longer_allowed_reads_nothing(
    tmp_path: Path, listener: Listener
) -> None:
    """The check holds at run time too: the operator may have narrowed the patterns since."""
    agent = http_agent("openai", base_url=f"{listener.url}/v1", api_key_env="MY_DB_PASSWORD")
    async with app_client(make_settings(tmp_path, agent_key_env=["MY_*"])) as client:
        created = await client.post("/agents", json=agent)
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
    listener.raw.clear()
    async with app_client(make_settings(tmp_path)) as client:
        shown = (await client.get(f"/agents/{agent_id}")).json()
        assert shown["usable"] is False and "MY_DB_PASSWORD" in shown["unusable_reason"]
        sent = await say_hi(client, agent_id)
        assert sent.status_code == 422, sent.text
        assert sent.json()["error"]["type"] == "agent_unusable"
        assert DB_PASSWORD not in sent.text
    assert listener.raw == []


async def test_the_operators_endpoints_get_the_servers_key(
    tmp_path: Path, listener: Listener
) -> None:
    """`--provider-base-url NAME=URL` (a trailing slash does not matter)."""
    allowed = [f"anthropic={listener.url}/", f"openai={listener.url}/v1"]
    async with app_client(make_settings(tmp_path, provider_base_urls=allowed)) as client:
        for provider in ("anthropic", "openai"):
            agent = http_agent(provider, base_url=root_of(provider, listener.url))
            created = await client.post("/agents", json=agent)
            assert created.json()["usable"] is True
            sent = await say_hi(client, created.json()["id"])
            assert sent.status_code == 200, sent.text
        # an endpoint allowed for anthropic is not one for openai
        crossed = await client.post("/agents", json=http_agent("openai", base_url=listener.url))
        assert (await say_hi(client, crossed.json()["id"])).status_code == 200
    assert listener.headers[0]["x-api-key"] == ANTHROPIC_KEY
    assert listener.headers[1]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "authorization" not in listener.headers[2]


async def test_openai_base_url_in_the_environment_is_the_operators_endpoint(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{listener.url}/v1")
    async with app_client(make_settings(tmp_path)) as client:
        default = (await client.get("/agents/default")).json()
        assert default["provider"] == "openai" and default["usable"] is True
        assert (await say_hi(client, "default")).status_code == 200
        named = await client.post(
            "/agents", json=http_agent("openai", api_key_env="OPENAI_API_KEY")
        )
        assert named.status_code == 201, named.text
        assert (await say_hi(client, named.json()["id"])).status_code == 200
    assert [h["authorization"] for h in listener.headers] == [f"Bearer {OPENAI_KEY}"] * 2


async def test_agents_show_whether_they_can_run(tmp_path: Path, listener: Listener) -> None:
    async with app_client(make_settings(tmp_path)) as client:
        scripted = await client.post("/agents", json=scripted_agent([{"text": "x"}]))
        assert scripted.json()["usable"] is True and scripted.json()["unusable_reason"] is None
        page = (await client.get("/agents")).json()["data"]
        assert all(agent["usable"] is True for agent in page), page
        assert json.dumps(page).count(ANTHROPIC_KEY) == 0


def test_the_settings_from_flags_and_environment() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--provider-base-url",
            "openai=http://127.0.0.1:8000/v1",
            "--provider-base-url",
            "anthropic=https://gateway.example.com",
            "--agent-key-env",
            "TEAM_*",
        ]
    )
    cli_values = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    settings = config.load(cli_values, env={}, config_file="/nonexistent.toml")
    assert settings.provider_base_urls == [
        "openai=http://127.0.0.1:8000/v1",
        "anthropic=https://gateway.example.com",
    ]
    assert settings.agent_key_env == ["TEAM_*"]
    env = {
        "SESSIOND_PROVIDER_BASE_URLS": "openai=http://a:1/v1,openai=http://b:2/v1",
        "SESSIOND_AGENT_KEY_ENV": "TEAM_*, PROJECT_?_KEY",
    }
    settings = config.load({}, env=env, config_file="/nonexistent.toml")
    assert settings.provider_base_urls == ["openai=http://a:1/v1", "openai=http://b:2/v1"]
    assert settings.agent_key_env == ["TEAM_*", "PROJECT_?_KEY"]


@pytest.mark.parametrize(
    "entry", ["http://a:1/v1", "nope=http://a:1", "openai=ftp://a", "openai=", "echo=http://a"]
)
def test_a_bad_provider_base_url_setting_names_itself(entry: str) -> None:
    with pytest.raises(ValueError, match="provider_base_urls") as caught:
        config.load({"provider_base_urls": [entry]}, env={}, config_file="/nonexistent.toml")
    assert repr(entry) in str(caught.value)
