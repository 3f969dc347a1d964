"""API keys: auth turns on with the first key, every operation of openapi.yaml but /healthz
needs one, scopes hold, keys made or revoked by the CLI take effect on a running server, the
key itself is never stored or logged, and a server with auth off stays on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from pathlib import Path

import httpx
import pytest

from server.api.auth import FRESH_S, KeyCache
from server.api.keys import issue
from server.cli import main
from server.cli.serve import exposure, is_loopback
from server.models import KeyScope
from server.store import SqliteStore
from tests.conftest import AppClient, app_client, make_settings
from tests.live import ThreadServer
from tests.spec import Spec, load_spec, operations
from tests.waiting import until, wait_until

KEY = re.compile(r"^sk-sd-[A-Za-z0-9_-]{43}$")
# no key needed: liveness, the browser SDK and the console's files (they hold nothing of
# any tenant); the spec says `security: []` for each
OPEN = {("/healthz", "get"), ("/sdk.js", "get"), ("/", "get"), ("/console/{name}", "get")}
READS = ("get", "head")


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def every_operation() -> list[tuple[str, str]]:
    return sorted(operations(load_spec()) - OPEN)


async def keyed(client: AppClient, scope: KeyScope, name: str = "k") -> str:
    """A new key; returns once the server has seen that auth is on."""
    made = await issue(client.app.state.store.keys, name, scope)

    async def on() -> bool:
        return (await client.get("/sessions")).status_code == 401

    await until(on, "auth to turn on after the first key")
    return made.key


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_every_operation_but_healthz_needs_a_key_once_one_exists(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            assert (await client.get("/sessions")).status_code == 200  # no key yet: auth off
            await keyed(client, "admin")
            for path, method in every_operation():
                for headers in (
                    {},
                    bearer("sk-sd-nope"),
                    {"x-api-key": "x"},
                    {"authorization": "Basic x"},
                ):
                    answer = await client.request(method, concrete(path), headers=headers)
                    assert answer.status_code == 401, (method, path, headers, answer.text)
                    assert answer.headers["www-authenticate"] == 'Bearer realm="sessiond"'
                    assert answer.json()["error"]["type"] == "unauthorized"
                    spec.check(answer, path)
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/")).status_code == 200
            assert (await client.get("/console/app.js")).status_code == 200
            assert (await client.get("/console/missing.js")).status_code == 404
            assert (await client.get("/sdk.js")).status_code == 200

    asyncio.run(go())


def test_scopes_read_write_admin(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            admin = await keyed(client, "admin")
            read = (await issue(client.app.state.store.keys, "r", "read")).key
            write = (await issue(client.app.state.store.keys, "w", "write")).key
            for path, method in every_operation():
                on_keys = path.startswith("/keys")
                if method not in READS or on_keys:  # what a read key may not do
                    answer = await client.request(method, concrete(path), headers=bearer(read))
                    assert answer.status_code == 403, (method, path, answer.text)
                    assert "needs a key of scope" in answer.json()["error"]["message"]
                    spec.check(answer, path)
                if on_keys:
                    answer = await client.request(method, concrete(path), headers=bearer(write))
                    assert answer.status_code == 403, (method, path, answer.text)
            # within its scope a key works, as either header
            assert (await client.get("/sessions", headers=bearer(read))).status_code == 200
            assert (await client.get("/agents", headers={"x-api-key": read})).status_code == 200
            made = await client.post("/sessions", json={}, headers=bearer(write))
            assert made.status_code == 201
            assert (await client.get("/keys", headers=bearer(admin))).status_code == 200
            assert (
                await client.post("/sessions", json={}, headers=bearer(admin))
            ).status_code == 201

    asyncio.run(go())


def test_keys_over_http_are_shown_once_and_revoked_at_once(tmp_path: Path) -> None:
    spec = Spec()

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as client:
            admin = bearer(await keyed(client, "admin"))
            made = await client.post("/keys", json={"name": "ci", "scope": "read"}, headers=admin)
            assert made.status_code == 201, made.text
            spec.check(made, "/keys")
            body = made.json()
            assert KEY.match(body["key"]) and body["scope"] == "read"
            assert made.headers["location"] == f"/keys/{body['id']}"
            assert made.headers["cache-control"] == "no-store"
            listed = await client.get("/keys", headers=admin)
            spec.check(listed, "/keys")
            assert body["key"] not in listed.text
            assert [k["name"] for k in listed.json()["data"]] == ["k", "ci"]
            ci = bearer(body["key"])
            assert (await client.get("/sessions", headers=ci)).status_code == 200
            gone = await client.delete(f"/keys/{body['id']}", headers=admin)
            assert gone.status_code == 204 and gone.content == b""
            again = await client.delete(f"/keys/{body['id']}", headers=admin)
            assert again.status_code == 204  # revoking twice changes nothing

            async def refused() -> bool:
                return (await client.get("/sessions", headers=ci)).status_code == 401

            await until(refused, "the revoked key to be refused")
            revoked = (await client.get("/keys", headers=admin)).json()["data"][1]
            assert revoked["revoked_at"] is not None
            missing = await client.delete("/keys/nope", headers=admin)
            assert missing.status_code == 404
            spec.check(missing, "/keys/{key_id}")
            for bad in (
                {},
                {"name": ""},
                {"name": "x", "scope": "root"},
                {"name": "x", "tenant": "t"},
            ):
                answer = await client.post("/keys", json=bad, headers=admin)
                assert answer.status_code == 400, (bad, answer.text)
                spec.check(answer, "/keys")

    asyncio.run(go())


def test_a_cached_key_is_refused_once_its_lookup_is_stale(tmp_path: Path) -> None:
    """The bound on revocation: a key found is trusted for FRESH_S (one second) at most."""

    async def go() -> None:
        store = SqliteStore(str(tmp_path / "c.db"))
        await store.open()
        try:
            clock = [100.0]
            cache = KeyCache(store.keys, required=False, clock=lambda: clock[0])
            made = await issue(store.keys, "k", "write")
            assert await cache.enabled()
            assert (await cache.find(made.key)) is not None
            await store.keys.revoke(made.id, "2026-12-03T00:00:00.000Z", None)
            clock[0] += FRESH_S * 0.9
            assert (await cache.find(made.key)) is not None  # still trusted, within the bound
            clock[0] += FRESH_S * 0.2
            assert (await cache.find(made.key)) is None
            assert await cache.find("sk-sd-never-made") is None
            clock[0] += FRESH_S
            assert await cache.enabled()  # every key revoked: auth stays on
            assert await KeyCache(store.keys, required=True).enabled()
        finally:
            await store.close()

    asyncio.run(go())


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def test_cli_keys_work_on_a_running_server_and_are_never_stored_or_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path)
    server = ThreadServer(settings).start()
    try:
        url = server.url
        code, printed = cli(
            "keys", "create", "--name", "ops", "--scope", "admin", "--db", settings.db
        )
        assert code == 0
        key = printed.strip()
        assert KEY.match(key)
        wait_until(lambda: httpx.get(f"{url}/sessions").status_code == 401, "auth on")
        assert httpx.get(f"{url}/sessions", headers=bearer(key)).status_code == 200
        made = httpx.post(f"{url}/keys", json={"name": "second"}, headers=bearer(key)).json()
        code, listing = cli("keys", "list", "--db", settings.db)
        assert code == 0 and "ops" in listing and "second" in listing
        assert key not in listing and made["key"] not in listing
        code, _ = cli("keys", "revoke", made["id"], "--db", settings.db)
        assert code == 0
        second = bearer(made["key"])
        wait_until(
            lambda: httpx.get(f"{url}/sessions", headers=second).status_code == 401,
            "the key revoked by the CLI to be refused",
        )
        assert cli("keys", "revoke", "nope", "--db", settings.db)[0] == 1
    finally:
        server.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("sessiond.db*"))
    for secret in (key, made["key"]):
        assert secret.encode() not in stored
        assert all(secret not in record.getMessage() for record in caplog.records)


def test_serving_other_hosts_needs_auth_or_insecure(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert not is_loopback("example.com")
    settings = make_settings(tmp_path, host="0.0.0.0")
    refusal = asyncio.run(exposure(settings))
    assert refusal is not None and "--insecure" in refusal and "keys create" in refusal
    assert asyncio.run(exposure(make_settings(tmp_path, host="0.0.0.0", insecure=True))) is None
    assert asyncio.run(exposure(make_settings(tmp_path))) is None
    required = asyncio.run(exposure(make_settings(tmp_path, auth="required")))
    assert required is not None and "no API key" in required
    code = main(["serve", "--host", "0.0.0.0", "--port", "1", "--db", settings.db])
    assert code == 2  # refused before binding anything
    cli("keys", "create", "--name", "k", "--db", settings.db)
    assert asyncio.run(exposure(settings)) is None  # with a key, auth is on
    assert asyncio.run(exposure(make_settings(tmp_path, auth="required"))) is None


def test_a_flood_of_made_up_keys_costs_one_lookup_each_interval(tmp_path: Path) -> None:
    async def go() -> None:
        store = SqliteStore(str(tmp_path / "u.db"))
        await store.open()
        try:
            lookups: list[str] = []
            real = store.keys.by_digest

            async def counted(digest: str) -> object:
                lookups.append(digest)
                return await real(digest)

            store.keys.by_digest = counted  # type: ignore[method-assign]
            clock = [0.0]
            cache = KeyCache(store.keys, required=True, clock=lambda: clock[0])
            for _ in range(100):
                assert await cache.find("sk-sd-made-up") is None
            assert len(lookups) == 1
            clock[0] += FRESH_S
            assert await cache.find("sk-sd-made-up") is None
            assert len(lookups) == 2
            made = await issue(store.keys, "k", "read")  # a key never tried: found at once
            assert await cache.find(made.key) is not None
        finally:
            await store.close()

    asyncio.run(go())
