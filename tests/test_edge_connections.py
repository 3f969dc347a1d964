"""The server's connections: slow clients are timed out, open connections are capped (with
/healthz still answered past the cap), new requests during the shutdown grace get 503, a
client leaving mid-body is one log line, and the start is logged. Real servers, raw sockets."""

from __future__ import annotations

import json
import logging
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli import connections
from tests.conftest import make_settings, scripted_agent
from tests.live import ProcessServer, ThreadServer
from tests.spec import Spec
from tests.waiting import wait_until

SPEC = Spec()
DEADLINE = 30.0  # generous: what is waited for happens after about a second


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(make_settings(tmp_path, request_timeout_s=1.0)).start()
    try:
        yield server
    finally:
        server.stop()


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    if data:
        sock.sendall(data)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (DEADLINE at most)."""
    chunks = []
    deadline = time.monotonic() + DEADLINE
    with sock:
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                pytest.fail(f"the server kept the connection open; it sent {b''.join(chunks)!r}")
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def wait_for(check: Callable[[], Any], what: str) -> Any:
    return wait_until(check, what, DEADLINE)


# -- slow clients --------------------------------------------------------------------------
def test_slow_headers_are_answered_408_and_closed(quick: ThreadServer) -> None:
    trickling = [
        connect(quick.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(20)
    ]
    silent = connect(quick.port)
    # while they hang, the server answers others
    assert httpx.get(f"{quick.url}/healthz", timeout=DEADLINE).status_code == 200
    for sock in trickling:
        status, headers, body = parse(read_to_close(sock))
        assert status == 408 and headers["connection"] == "close"
        assert body["error"]["type"] == "request_timeout"
        assert "headers" in body["error"]["message"]
        SPEC.validate(body, "#/components/schemas/Error")
    assert read_to_close(silent) == b""  # it never asked anything: closed without an answer


def test_a_slow_body_is_answered_408_and_closed(quick: ThreadServer) -> None:
    before = len(httpx.get(f"{quick.url}/sessions").json()["data"])
    head = (
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    slow = [connect(quick.port, head) for _ in range(10)]
    for sock in slow:
        status, headers, body = parse(read_to_close(sock))
        assert status == 408 and headers["connection"] == "close"
        assert body["error"]["type"] == "request_timeout"
        assert "body" in body["error"]["message"]
    assert len(httpx.get(f"{quick.url}/sessions").json()["data"]) == before


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(quick: ThreadServer) -> None:
    sock = connect(quick.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    status, _, body = parse(read_to_close(sock))
    assert status == 408 and body["error"]["type"] == "request_timeout"


# -- the connection cap --------------------------------------------------------------------
def request(port: int, path: str) -> tuple[int, dict[str, str], Any]:
    return parse(read_to_close(connect(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())))


def dropped(port: int) -> bool:
    """A request on a new connection gets no answer at all: the server closed it at once."""
    try:
        sock = connect(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return True
    return read_to_close(sock) == b""


def test_past_the_cap_requests_get_503_json_and_healthz_still_answers(tmp_path: Path) -> None:
    server = ThreadServer(make_settings(tmp_path, max_connections=4)).start()
    holders: list[socket.socket] = []
    try:
        holders += [connect(server.port) for _ in range(4)]
        status, headers, body = wait_for(
            lambda: (r := request(server.port, "/sessions"))[0] == 503 and r, "the cap to bite"
        )
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        assert body["error"]["type"] == "unavailable"
        SPEC.validate(body, "#/components/schemas/Error")
        status, headers, body = request(server.port, "/healthz")
        assert status == 200 and body == {"status": "ok"} and headers["connection"] == "close"
        # past the cap and its few spare connections, a connection is closed at once
        holders += [connect(server.port) for _ in range(connections.OVERFLOW_CONNECTIONS)]
        wait_for(lambda: dropped(server.port), "a connection dropped at once")
        for sock in holders:
            sock.close()
        holders = []
        wait_for(lambda: request(server.port, "/sessions")[0] == 200, "room again")
    finally:
        for sock in holders:
            sock.close()
        server.stop()


def test_the_default_cap_leaves_descriptors_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    cap = connections.default_max_connections()
    assert cap + connections.OVERFLOW_CONNECTIONS + 200 <= 1024
    assert cap >= 512


# -- shutdown ------------------------------------------------------------------------------
def test_during_the_shutdown_grace_new_requests_get_503(tmp_path: Path) -> None:
    server = ProcessServer(tmp_path / "t.db", tmp_path, "--shutdown-grace", "60").start()
    try:
        slow = scripted_agent([{"text": "word " * 60}], options={"token_delay_ms": 100})
        agent_id = httpx.post(f"{server.url}/agents", json=slow).json()["id"]
        sid = httpx.post(f"{server.url}/sessions", json={"agent_id": agent_id}).json()["id"]
        run_id = httpx.post(f"{server.url}/sessions/{sid}/runs", json={"message": "go"}).json()[
            "run_id"
        ]
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> httpx.Response | None:
            try:
                response = httpx.get(f"{server.url}/sessions/{sid}", timeout=DEADLINE)
            except httpx.ConnectError:
                pytest.fail("the server stopped listening while its run was still going")
            return response if response.status_code != 200 else None

        response = wait_for(refused, "a refusal")
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "unavailable"
        assert response.headers["retry-after"] == "1"
        server.proc.wait(60)  # once the run has finished
        server = ProcessServer(tmp_path / "t.db", tmp_path).start()
        run = httpx.get(f"{server.url}/sessions/{sid}/runs/{run_id}").json()
        assert run["status"] == "completed"  # it was given its grace, not interrupted
    finally:
        server.stop()


# -- logging -------------------------------------------------------------------------------
def test_a_client_leaving_mid_body_is_one_line(
    quick: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sessiond")
    head = (
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    with connect(quick.port, head):
        pass  # gone before the body is

    def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("sessiond")]

    records = wait_for(told, "a log line")
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and records[0].levelno < logging.ERROR
    assert records[0].getMessage() == "POST /sessions 400: client left during the request body"


def test_the_start_is_logged(tmp_path: Path) -> None:
    db = tmp_path / "named.db"
    origin = "http://127.0.0.1:8765"
    server = ProcessServer(db, tmp_path, "--cors-origin", origin).start()
    try:
        text = server.log.read_text()
    finally:
        server.stop()
    line = next((x for x in text.splitlines() if "listening on" in x), None)
    assert line is not None, text
    assert str(db) in line and f"127.0.0.1:{server.port}" in line
    assert str(tmp_path) in line and origin in line
