"""Stream tokens: with auth on, a run's `events_url` and `GET /sessions/{id}/events_url`
carry a token that opens that one stream, for a browser's EventSource (which cannot send a
key). Another run, another session, a route that is not a stream, an altered or an expired
token: 401. The secret behind the tokens survives a restart and is never in the database in
clear."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser

from server.api import tokens
from server.api.keys import issue
from tests.conftest import app_client, make_settings, scripted_agent
from tests.live import ThreadServer
from tests.proxy import CuttingProxy
from tests.test_auth import bearer, keyed
from tests.waiting import until, wait_until

WORDS = [f"w{i:02d}" for i in range(40)]
REPLY = " ".join(WORDS)


async def started_run(client: Any, headers: dict[str, str], sid: str) -> dict[str, Any]:
    answer = await client.post(f"/sessions/{sid}/runs", json={"message": "go"}, headers=headers)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def altered(token: str) -> str:
    """The token with its last character changed (to one it surely is not)."""
    return token[:-1] + ("B" if token[-1] == "A" else "A")


def test_a_token_opens_its_own_stream_only(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            key = bearer(await keyed(client, "write"))
            sid = (await client.post("/sessions", json={}, headers=key)).json()["id"]
            other = (await client.post("/sessions", json={}, headers=key)).json()["id"]
            one = await started_run(client, key, sid)
            url = one["events_url"]
            assert url.startswith(f"/sessions/{sid}/runs/{one['run_id']}/events?token=st1~")
            await client.flush()
            # the token alone opens the run's events, to the end
            opened = await client.get(url)
            assert opened.status_code == 200, opened.text
            assert "event: done" in opened.text
            token = url.split("token=", 1)[1]
            # after the first run has ended, a second: run 1's token does not open it
            await wait_until_idle(client, key, sid)
            two = await started_run(client, key, sid)
            refused = [
                f"/sessions/{sid}/runs/{two['run_id']}/events?token={token}",
                f"/sessions/{other}/runs/{one['run_id']}/events?token={token}",
                f"/sessions/{sid}/events?token={token}",  # the channel is another stream
                f"/sessions/{sid}?token={token}",  # not a stream at all
                f"/sessions/{sid}/runs/{one['run_id']}?token={token}",
                f"/sessions/{sid}/runs/{one['run_id']}/events?token={altered(token)}",
                f"/sessions/{sid}/runs/{one['run_id']}/events?token="
                + token.replace("st1~default~", "st1~other~"),
                f"/sessions/{sid}/runs/{one['run_id']}/events?token=nonsense",
            ]
            for bad in refused:
                answer = await client.get(bad)
                assert answer.status_code == 401, (bad, answer.text)
                assert answer.json()["error"]["type"] == "unauthorized"
            # a token is for reading: a write with one is refused
            cancel = await client.post(f"/sessions/{sid}/runs/{one['run_id']}/cancel?token={token}")
            assert cancel.status_code == 401
            # the channel's own URL, and a fresh one for a run
            channel = await client.get(f"/sessions/{sid}/events_url", headers=key)
            assert channel.status_code == 200, channel.text
            assert channel.headers["cache-control"] == "no-store"
            body = channel.json()
            assert body["events_url"].startswith(f"/sessions/{sid}/events?token=")
            assert body["expires_at"] is not None
            fresh = await client.get(
                f"/sessions/{sid}/events_url?run_id={one['run_id']}", headers=key
            )
            assert fresh.json()["events_url"].startswith(
                f"/sessions/{sid}/runs/{one['run_id']}/events?token="
            )
            assert (await client.get(fresh.json()["events_url"])).status_code == 200
            unknown = await client.get(f"/sessions/{sid}/events_url?run_id=nope", headers=key)
            assert unknown.status_code == 404
            # expired: the same token an hour and a bit later
            client.app.state.tokens.clock = lambda: time.time() + 3601
            expired = await client.get(url)
            assert expired.status_code == 401, expired.text
            assert "expired" in expired.json()["error"]["message"]

    asyncio.run(go())


async def wait_until_idle(client: Any, key: dict[str, str], sid: str) -> None:
    async def idle() -> bool:
        answer = await client.get(f"/sessions/{sid}", headers=key)
        return bool(answer.json()["status"] == "idle")

    await until(idle, "the session to be idle")


def test_without_auth_the_url_needs_no_token(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            sid = (await client.post("/sessions", json={})).json()["id"]
            run = await started_run(client, {}, sid)
            assert run["events_url"] == f"/sessions/{sid}/runs/{run['run_id']}/events"
            body = (await client.get(f"/sessions/{sid}/events_url")).json()
            assert body == {"events_url": f"/sessions/{sid}/events", "expires_at": None}

    asyncio.run(go())


def test_the_secret_survives_a_restart_and_is_sealed_in_the_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def go() -> None:
        async with app_client(settings) as client:
            made = await issue(client.app.state.store.keys, "k", "read")
            secret = client.app.state.tokens.secret
            token, _ = client.app.state.tokens.mint("default", made.id, "s1", "r1")
        async with app_client(settings) as client:
            assert client.app.state.tokens.secret == secret
            assert client.app.state.tokens.check(token, "/sessions/s1/runs/r1/events")
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("sessiond.db*") if p.suffix != ".key")
        for form in (secret, secret.hex().encode(), base64.urlsafe_b64encode(secret)):
            assert form not in raw
        assert (tmp_path / "sessiond.db.key").stat().st_mode & 0o077 == 0
        # another sealing key: a new secret, old tokens refused
        (tmp_path / "sessiond.db.key").unlink()
        async with app_client(settings) as client:
            assert client.app.state.tokens.secret != secret
            assert client.app.state.tokens.check(token, "/sessions/s1/runs/r1/events") is None

    asyncio.run(go())


def test_sealing_takes_back_only_with_the_same_key() -> None:
    secret = bytes(range(32))
    sealed = tokens.seal(secret, b"k" * 32)
    assert tokens.unseal(sealed, b"k" * 32) == secret
    assert tokens.unseal(sealed, b"j" * 32) is None
    assert tokens.unseal(sealed[:-4] + "AAAA", b"k" * 32) is None
    assert tokens.unseal("!!", b"k" * 32) is None


# -- in a real browser -------------------------------------------------------------------


PAGE = """<!doctype html><meta charset="utf-8"><title>follow</title><pre id="log"></pre>
<script>
window.text = ""; window.deltas = 0; window.opens = 0; window.state = "open";
const source = new EventSource(new URLSearchParams(location.search).get("events"));
source.onopen = () => { window.opens += 1; };
source.addEventListener("text_delta", (e) => {
  window.text += JSON.parse(e.data).text; window.deltas += 1;
});
source.addEventListener("done", () => { window.state = "done"; source.close(); });
source.onerror = () => { if (source.readyState === EventSource.CLOSED) window.state = "refused"; };
</script>"""


def open_follower(browser: Browser, proxy: CuttingProxy, events: str) -> Any:
    page = browser.new_page()
    page.route(
        lambda url: url.startswith(f"{proxy.url}/page.html"),
        lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
    )
    page.goto(f"{proxy.url}/page.html?events={httpx.QueryParams({'x': events})['x']}")
    return page


def test_a_browser_follows_a_run_by_its_events_url_across_a_cut_connection(
    tmp_path: Path, browser: Browser
) -> None:
    server = ThreadServer(make_settings(tmp_path)).start()
    proxy = CuttingProxy(server.port)
    db = server.settings.db
    try:
        made_key = subprocess.run(
            [sys.executable, "-m", "server", "keys", "create", "--name", "web", "--db", db],
            capture_output=True,
            text=True,
            check=True,
        )
        key = bearer(made_key.stdout.strip())
        wait_until(
            lambda: httpx.get(f"{server.url}/sessions").status_code == 401, "auth to turn on"
        )
        agent = scripted_agent([{"text": REPLY}], options={"token_delay_ms": 60})
        made = httpx.post(f"{server.url}/agents", json=agent, headers=key)
        assert made.status_code == 201, made.text
        sid = httpx.post(
            f"{server.url}/sessions", json={"agent_id": made.json()["id"]}, headers=key
        ).json()["id"]
        run = httpx.post(f"{server.url}/sessions/{sid}/runs", json={"message": "go"}, headers=key)
        assert run.status_code == 202, run.text
        events_url = run.json()["events_url"]

        page = open_follower(browser, proxy, events_url)
        page.wait_for_function("window.deltas >= 5", timeout=30_000)
        proxy.cut()  # mid-reply: EventSource reconnects by itself, with Last-Event-ID
        page.wait_for_function("window.state === 'done'", timeout=60_000)
        assert page.evaluate("window.text") == REPLY  # no gap, nothing twice
        assert page.evaluate("window.opens") >= 2
        follows = [h for h in proxy.heads if b"/events?token=" in h]
        assert len(follows) >= 2
        assert any(b"last-event-id:" in h.lower() for h in follows[1:])

        # run 1's token does not open run 2, in the browser either
        second = httpx.post(
            f"{server.url}/sessions/{sid}/runs", json={"message": "again"}, headers=key
        ).json()
        token = events_url.split("token=", 1)[1]
        wrong = open_follower(
            browser, proxy, f"/sessions/{sid}/runs/{second['run_id']}/events?token={token}"
        )
        wrong.wait_for_function("window.state === 'refused'", timeout=30_000)
        assert wrong.evaluate("window.deltas") == 0
    finally:
        proxy.close()
        server.stop()
