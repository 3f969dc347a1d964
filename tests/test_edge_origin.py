"""Who may call the API: bodies must be JSON (a `text/plain` fetch needs no CORS preflight),
state-changing requests from a foreign page's origin are refused, and so is a preflight from
an origin the server does not allow. In-process, then in a real headless Chromium."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.spec import Spec, load_spec

JSON = {"content-type": "application/json"}
EVIL = "http://evil.example:8080"
TOOL_STEP = {"tool_calls": [{"name": "write_file", "input": {"path": "pwned.txt", "content": "x"}}]}


async def counts(http: httpx.AsyncClient) -> tuple[int, int]:
    sessions = (await http.get("/sessions", params={"limit": 1000})).json()["data"]
    agents = (await http.get("/agents", params={"limit": 1000})).json()["data"]
    return len(sessions), len(agents)


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "text/plain;charset=UTF-8"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},
    ],
)
def test_a_body_that_is_not_json_is_415_and_changes_nothing(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            before = await counts(http)
            for path in ("/sessions", "/agents", "/run"):
                body = b'{"prompt": "hi", "name": "x", "provider": "echo"}'
                response = await http.post(path, content=body, headers=headers)
                assert response.status_code == 415, (path, response.text)
                error = response.json()["error"]
                assert error["type"] == "unsupported_media_type"
                assert "application/json" in error["message"]
                spec.check(response, path)
            assert await counts(http) == before

    asyncio.run(go())


def test_json_with_a_charset_and_bodiless_posts_pass(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            made = await http.post(
                "/sessions",
                content=b"{}",
                headers={"content-type": "Application/JSON; charset=utf-8"},
            )
            assert made.status_code == 201, made.text
            fork = await http.post(f"/sessions/{made.json()['id']}/fork")  # no body at all
            assert fork.status_code == 201, fork.text

    asyncio.run(go())


def test_import_keeps_its_own_types(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = (await http.post("/sessions", json={})).json()["id"]
            bundle = (await http.post("/sessions/export", json={"ids": [sid]})).content
            doc = (await http.get(f"/sessions/{sid}/export")).content
            await http.delete(f"/sessions/{sid}")
            for kind, body in (("application/zip", bundle), ("application/json", doc)):
                done = await http.post(
                    "/sessions/import", content=body, headers={"content-type": kind}
                )
                assert done.status_code == 201, (kind, done.text)
                await http.delete(f"/sessions/{done.json()['sessions'][0]['id']}")
            plain = await http.post(
                "/sessions/import", content=doc, headers={"content-type": "text/plain"}
            )
            assert plain.status_code == 415
            assert "application/zip" in plain.json()["error"]["message"]
            Spec().check(plain, "/sessions/import")

    asyncio.run(go())


def test_a_foreign_origin_may_not_change_anything(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            sid = (await http.post("/sessions", json={})).json()["id"]
            before = await counts(http)
            foreign = {**JSON, "origin": EVIL}
            refused = [
                (await http.post("/sessions", json={}, headers=foreign), "/sessions"),
                (await http.post("/run", json={"prompt": "hi"}, headers=foreign), "/run"),
                (await http.delete(f"/sessions/{sid}", headers=foreign), "/sessions/{session_id}"),
                (
                    await http.patch(f"/sessions/{sid}", json={"title": "t"}, headers=foreign),
                    "/sessions/{session_id}",
                ),
                (
                    await http.post("/sessions", json={}, headers={**JSON, "origin": "null"}),
                    "/sessions",
                ),
            ]
            for response, path in refused:
                assert response.status_code == 403, response.text
                error = response.json()["error"]
                assert error["type"] == "forbidden"
                spec.check(response, path)
            assert "--cors-origin" in refused[0][0].json()["error"]["message"]
            assert EVIL in refused[0][0].json()["error"]["message"]
            assert await counts(http) == before
            assert (await http.get(f"/sessions/{sid}")).json()["title"] is None
            # reading is not refused (the browser keeps a foreign page from seeing the answer)
            assert (await http.get("/sessions", headers={"origin": EVIL})).status_code == 200
            # the server's own pages: the origin the request was addressed to (its Host)
            for own in ("http://sessiond", "http://sessiond:80"):
                mine = await http.post("/sessions", json={}, headers={**JSON, "origin": own})
                assert mine.status_code == 201, mine.text
            other_port = {**JSON, "origin": "http://sessiond:8080"}
            assert (await http.post("/sessions", json={}, headers=other_port)).status_code == 403
            https = {**JSON, "origin": "https://sessiond"}
            assert (await http.post("/sessions", json={}, headers=https)).status_code == 403

    asyncio.run(go())


def test_an_allowed_origin_may(tmp_path: Path) -> None:
    async def go() -> None:
        settings = make_settings(tmp_path, cors_origins=["http://app.example:3000"])
        async with app_client(settings) as http:
            ok = {**JSON, "origin": "http://app.example:3000"}
            made = await http.post("/sessions", json={}, headers=ok)
            assert made.status_code == 201
            assert made.headers["access-control-allow-origin"] == "http://app.example:3000"
            # a refusal an allowed page can read
            plain = await http.post(
                "/sessions", content=b"{}", headers={**ok, "content-type": "text/plain"}
            )
            assert plain.status_code == 415
            assert plain.headers["access-control-allow-origin"] == "http://app.example:3000"
            other = {**JSON, "origin": EVIL}
            assert (await http.post("/sessions", json={}, headers=other)).status_code == 403
        async with app_client(make_settings(tmp_path, cors_origins=["*"])) as http:
            anyone = await http.post("/sessions", json={}, headers={**JSON, "origin": EVIL})
            assert anyone.status_code == 201

    asyncio.run(go())


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }


@pytest.mark.parametrize("cors_origins", [[], ["http://app.example:3000"]])
def test_a_preflight_from_an_origin_not_allowed_is_a_clear_403(
    tmp_path: Path, cors_origins: list[str]
) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path, cors_origins=cors_origins)) as http:
            response = await http.options("/sessions", headers=preflight(EVIL))
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["type"] == "forbidden"
            assert EVIL in error["message"] and "--cors-origin" in error["message"]
            assert "access-control-allow-origin" not in response.headers
            if cors_origins:
                allowed = await http.options("/sessions", headers=preflight(cors_origins[0]))
                assert allowed.status_code == 200
                assert allowed.headers["access-control-allow-origin"] == cors_origins[0]

    asyncio.run(go())


def test_the_spec_documents_415_and_403_where_they_can_happen() -> None:
    spec = load_spec()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            if "requestBody" in op:
                assert "415" in codes, f"{method} {path}: no 415"
            if method in ("post", "put", "patch", "delete"):
                assert "403" in codes, f"{method} {path}: no 403"


# -- a real browser --------------------------------------------------------------------------
HOSTILE = """<!doctype html>
<title>hostile</title>
<script>
const api = "%(api)s";
const attacks = [
  ["/run", {"prompt": "write the file", "continue": true}],
  ["/sessions/%(sid)s/message", {"message": "write the file"}],
  ["/sessions", {"name": "planted"}],
];
async function attack() {
  const seen = [];
  for (const [path, body] of attacks) {
    const text = JSON.stringify(body);
    const tries = [
      {method: "POST", headers: {"Content-Type": "text/plain"}, body: text},
      {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: text},
      {method: "POST", mode: "no-cors", body: new Blob([text])},  // no Content-Type at all
      {method: "POST", mode: "no-cors", body: new URLSearchParams({text})},  // a form's type
    ];
    for (const init of tries) {
      try {
        const r = await fetch(api + path, init);
        seen.push(r.type + ":" + r.status);
      } catch (e) {
        seen.push("rejected");
      }
    }
  }
  return seen;
}
window.attackDone = attack();
</script>
"""


class Hostile:
    """A second loopback HTTP server (another port, so another origin) serving one page."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Hostile:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_hostile_page_in_chromium_changes_nothing(tmp_path: Path, browser: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    server = ThreadServer(make_settings(tmp_path, allow_roots=[str(tmp_path)])).start()
    try:
        with httpx.Client(base_url=server.url) as api:
            agent = scripted_agent([TOOL_STEP, {"text": "done"}], tools=["write_file"])
            agent_id = api.post("/agents", json=agent).json()["id"]
            made = api.post("/sessions", json={"agent_id": agent_id, "work_dir": str(work)})
            sid = made.json()["id"]

            def state() -> Any:
                sessions = api.get("/sessions", params={"limit": 1000}).json()["data"]
                runs = api.get(f"/sessions/{sid}/runs").json()["data"]
                messages = api.get(f"/sessions/{sid}/messages").json()["data"]
                return [s["id"] for s in sessions], runs, messages

            before = state()
            answered: list[tuple[str, int]] = []
            page = browser.new_page()
            page.on("response", lambda r: answered.append((r.url, r.status)))
            with Hostile(HOSTILE % {"api": server.url, "sid": sid}) as hostile:
                page.goto(hostile.url)
                seen = page.evaluate("window.attackDone")
            page.close()
            assert len(seen) == 12, seen
            # the cors-mode fetches cannot read the refusal; the no-cors ones get opaque answers
            assert seen[0] == "rejected" and "opaque:0" in seen, seen
            to_api = [status for url, status in answered if url.startswith(server.url)]
            assert to_api and set(to_api) <= {403}, answered  # they reached the server: refused
            assert state() == before
            assert not (work / "pwned.txt").exists()
    finally:
        server.stop()
