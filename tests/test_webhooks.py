"""Run-end webhooks: signed per the Standard Webhooks spec (checked with the
`standardwebhooks` package's own verifier), delivered from the outbox at least once with one
webhook-id across retries and a restart, shown per attempt, never to private addresses
without the operator's word, and the secret never kept in clear."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from server.webhooks import signing, urls
from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer
from tests.spec import Spec
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


# -- signing -----------------------------------------------------------------------------
def test_our_signature_is_one_the_standard_verifier_accepts() -> None:
    secret, raw = signing.new_secret()
    body = b'{"type":"run.completed","data":{}}'
    headers = signing.headers(raw, "msg_1", int(__import__("time").time()), body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    _, other = signing.new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.shown(other)).verify(body, headers)


def test_the_specs_example_vector() -> None:
    """The example of the Standard Webhooks spec: id, timestamp, body and secret as it gives
    them, and the signature it says they make."""
    raw = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    got = signing.signature(raw, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_private_addresses() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1",
                    "fc00::1", "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1"):  # fmt: skip
        assert urls.private(address), address
    for address in ("93.184.216.34", "2606:4700::1111"):
        assert not urls.private(address), address


# -- a receiver --------------------------------------------------------------------------
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A loopback HTTP server that answers each POST with the next status of `answers` (the
    last one repeating), keeping each request's headers and raw body."""

    answers: list[int]
    got: list[Received] = field(default_factory=list)
    url: str = ""
    server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks/sessiond"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.strip().split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.got.append(Received(headers, body))
            status = self.answers[min(len(self.got) - 1, len(self.answers) - 1)]
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


SPEC = Spec()


def settings(tmp_path: Path, **overrides: Any) -> Any:
    values = {"webhook_allow_private": True, "webhook_poll_s": 0.05} | overrides
    return make_settings(tmp_path, **values)


async def deliveries(http: httpx.AsyncClient, url: str, sid: str) -> list[dict[str, Any]]:
    answer = await http.get(f"{url}/sessions/{sid}/webhook_deliveries")
    assert answer.status_code == 200, answer.text
    SPEC.check(answer, "/sessions/{session_id}/webhook_deliveries")
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def test_a_failing_receiver_gets_the_event_across_a_restart(tmp_path: Path) -> None:
    """The receiver fails twice, then succeeds; the server restarts between the first and
    the second try (the first server would not retry for an hour, the second retries at
    once: pending deliveries follow the settings of the server that sends them). Delivered
    once, with one webhook-id on all three tries, each signature verified with the
    secret the session was given."""

    async def go() -> None:
        async with Receiver([500, 503, 204]) as receiver, httpx.AsyncClient(timeout=30) as http:
            first = ThreadServer(settings(tmp_path, webhook_retry_base=3600.0)).start()
            try:
                agent = (
                    await http.post(f"{first.url}/agents", json=scripted_agent([{"text": "hi"}]))
                ).json()
                made = await http.post(
                    f"{first.url}/sessions",
                    json={"agent_id": agent["id"], "webhook_url": receiver.url},
                )
                assert made.status_code == 201, made.text
                Spec().check(made, "/sessions")
                session = made.json()
                sid, secret = session["id"], session["webhook_secret"]
                assert secret.startswith("whsec_")
                shown = (await http.get(f"{first.url}/sessions/{sid}")).json()
                assert "webhook_secret" not in shown and shown["webhook_url"] == receiver.url
                reply = await http.post(
                    f"{first.url}/sessions/{sid}/message", json={"message": "x"}
                )
                assert reply.status_code == 200, reply.text
                run_id = reply.json()["run_id"]

                async def one_attempt() -> Any:
                    found = await deliveries(http, first.url, sid)
                    return found and len(found[0]["attempts"]) == 1 and found[0]

                pending = await until(one_attempt, "the first attempt to be recorded")
                assert pending["status"] == "pending"
                assert pending["attempts"][0]["status_code"] == 500
                assert pending["next_attempt_at"] is not None
            finally:
                first.stop()
            assert len(receiver.got) == 1
            second = ThreadServer(settings(tmp_path, webhook_retry_base=0.02)).start()
            try:

                async def delivered() -> Any:
                    found = await deliveries(http, second.url, sid)
                    return found and found[0]["status"] == "delivered" and found[0]

                done = await until(delivered, "the delivery to succeed")
                assert [a["status_code"] for a in done["attempts"]] == [500, 503, 204]
                assert [a["attempt"] for a in done["attempts"]] == [1, 2, 3]
                assert done["type"] == "run.completed" and done["run_id"] == run_id
                assert done["next_attempt_at"] is None
                metrics = (await http.get(f"{second.url}/metrics")).text
                assert 'sessiond_webhook_attempts_total{outcome="retry"} 1.0' in metrics
                assert 'sessiond_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
            finally:
                second.stop()
        assert len(receiver.got) == 3
        ids = {r.headers["webhook-id"] for r in receiver.got}
        assert ids == {done["id"]}
        verifier = Webhook(secret)
        for got in receiver.got:
            event = verifier.verify(got.body, got.headers)
            assert event["type"] == "run.completed"
            assert event["data"]["id"] == run_id and event["data"]["status"] == "completed"
        assert receiver.got[0].body == receiver.got[2].body  # the same event each time
        with pytest.raises(WebhookVerificationError):
            Webhook(signing.shown(b"\0" * 32)).verify(receiver.got[0].body, receiver.got[0].headers)
        # the secret is kept sealed: neither its text nor its bytes are in the database
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        conn = sqlite3.connect(tmp_path / "sessiond.db")
        try:
            dump = "\n".join(conn.iterdump()).encode()
        finally:
            conn.close()
        assert secret.encode() not in dump and raw not in dump
        assert secret.removeprefix("whsec_").encode() not in dump

    asyncio.run(go())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.7/hook",
        "https://192.168.1.1/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_a_private_address_is_refused_without_the_flag(tmp_path: Path, url: str) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            server = ThreadServer(make_settings(tmp_path)).start()
            try:
                session = await http.post(f"{server.url}/sessions", json={"webhook_url": url})
                assert session.status_code == 400, session.text
                error = session.json()["error"]
                assert error["field"] == "webhook_url"
                assert "--webhook-allow-private" in error["message"]
                agent = scripted_agent([{"text": "hi"}], webhook_url=url)
                assert (await http.post(f"{server.url}/agents", json=agent)).status_code == 400
            finally:
                server.stop()

    asyncio.run(go())


def test_only_http_urls_and_the_check_again_at_delivery(tmp_path: Path) -> None:
    """A URL set while the operator allowed private addresses is not posted to once a server
    runs without that: the attempt says why. The agent's webhook serves its sessions unless
    a session names its own."""

    async def go() -> None:
        async with Receiver([200]) as receiver, httpx.AsyncClient(timeout=30) as http:
            first = ThreadServer(settings(tmp_path)).start()
            try:
                for bad in ("ftp://example.com/x", "file:///etc/passwd", "http://", "nope"):
                    answer = await http.post(f"{first.url}/sessions", json={"webhook_url": bad})
                    assert answer.status_code == 400, (bad, answer.text)
                agent = scripted_agent([{"text": "hi"}], webhook_url=receiver.url)
                answer = await http.post(f"{first.url}/agents", json=agent)
                SPEC.check(answer, "/agents")
                made = answer.json()
                assert made["webhook_secret"].startswith("whsec_")
                shown = (await http.get(f"{first.url}/agents/{made['id']}")).json()
                assert "webhook_secret" not in shown and shown["webhook_url"] == receiver.url
                sid = (
                    await http.post(f"{first.url}/sessions", json={"agent_id": made["id"]})
                ).json()["id"]
            finally:
                first.stop()
            second = ThreadServer(make_settings(tmp_path, webhook_poll_s=0.05)).start()
            try:
                reply = await http.post(
                    f"{second.url}/sessions/{sid}/message", json={"message": "x"}
                )
                assert reply.status_code == 200, reply.text

                async def attempted() -> Any:
                    found = await deliveries(http, second.url, sid)
                    return found and found[0]["attempts"] and found[0]

                found = await until(attempted, "an attempt to be recorded")
                attempt = found["attempts"][0]
                assert attempt["status_code"] is None
                assert "--webhook-allow-private" in attempt["error"]
                assert receiver.got == []
            finally:
                second.stop()

    asyncio.run(go())


def test_every_run_end_is_announced_and_a_dead_receiver_is_given_up(tmp_path: Path) -> None:
    """A run paused for a client tool announces `run.requires_action`; its cancel,
    `run.cancelled`. Past --webhook-retry-max a failing delivery is given up (`failed`)."""

    async def go() -> None:
        async with (
            Receiver([200]) as receiver,
            Receiver([500]) as dead,
            httpx.AsyncClient(timeout=30) as http,
        ):
            server = ThreadServer(settings(tmp_path, webhook_retry_max=0.01)).start()
            try:
                script = [{"tool_calls": [{"name": "ask", "input": {}}]}]
                agent = scripted_agent(script, webhook_url=receiver.url)
                made = (await http.post(f"{server.url}/agents", json=agent)).json()
                sid = (
                    await http.post(f"{server.url}/sessions", json={"agent_id": made["id"]})
                ).json()["id"]
                tool = {"name": "ask", "input_schema": {"type": "object"}}
                body = {"message": "x", "tools": [tool]}
                paused = await http.post(f"{server.url}/sessions/{sid}/message", json=body)
                run_id = paused.json()["run_id"]
                cancel = f"{server.url}/sessions/{sid}/runs/{run_id}/cancel"
                assert (await http.post(cancel)).status_code in (200, 202)

                async def both() -> Any:
                    found = await deliveries(http, server.url, sid)
                    done = [d for d in found if d["status"] == "delivered"]
                    return len(done) == 2 and done

                done = await until(both, "two deliveries")
                assert sorted(d["type"] for d in done) == [
                    "run.cancelled",
                    "run.requires_action",
                ]
                kinds = [json.loads(r.body)["type"] for r in receiver.got]
                assert kinds == ["run.requires_action", "run.cancelled"]

                other = await http.post(
                    f"{server.url}/sessions",
                    json={"agent_id": made["id"], "webhook_url": dead.url},
                )
                oid = other.json()["id"]
                await http.post(f"{server.url}/sessions/{oid}/message", json=body)

                async def given_up() -> Any:
                    found = await deliveries(http, server.url, oid)
                    return found and found[0]["status"] == "failed" and found[0]

                failed = await until(given_up, "the delivery to be given up")
                assert [a["status_code"] for a in failed["attempts"]] == [500]
                assert failed["next_attempt_at"] is None
                assert len(receiver.got) == 2  # the session's URL won over its agent's
            finally:
                server.stop()

    asyncio.run(go())
