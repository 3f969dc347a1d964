"""The README's SDK examples, run as they are written: the Python ones as scripts against a
real server (and LocalClient on a file of its own), the sdk.js page in a real Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEFAULT = "http://127.0.0.1:2323"


def example(name: str) -> str:
    found = re.search(rf"<!-- sdk-example: {name} -->\n```\w+\n(.*?)```", README, re.S)
    assert found, f"README.md has no {name} example"
    return found.group(1)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(make_settings(tmp_path)).start()
    yield server
    server.stop()


def run_example(name: str, url: str, cwd: Path) -> str:
    env = {**os.environ, "SESSIOND_URL": url, "PYTHONPATH": str(ROOT)}
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SESSIOND_API_KEY"):
        env.pop(key, None)
    script = example(name).replace(DEFAULT, url)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_client_example(live: ThreadServer, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi\n")
    out = run_example("client", live.url, tmp_path)
    assert out.startswith("Done looking. ['list_files']\nLooking. \n[list_files: ")
    assert out.endswith("Done looking.\n8 messages stored\n")
    again = run_example("client", live.url, tmp_path)  # it may be run again
    assert again.endswith("16 messages stored\n")


def test_the_async_example(live: ThreadServer, tmp_path: Path) -> None:
    out = run_example("async", live.url, tmp_path)
    assert " completed\n['completed']\n404 " in out


def test_the_local_example(tmp_path: Path) -> None:
    out = run_example("local", "http://127.0.0.1:9", tmp_path)  # no server is asked
    assert "['user', 'assistant']" in out
    assert (tmp_path / "data" / "local.db").exists()


def test_the_browser_example(live: ThreadServer, browser: Browser) -> None:
    agent = scripted_agent([{"text": "It holds notes."}], name="demo")
    made = httpx.post(f"{live.url}/agents", json=agent).json()
    httpx.post(f"{live.url}/sessions", json={"name": "demo", "agent_id": made["id"]})
    page = browser.new_page()
    body = example("js").replace(DEFAULT, live.url)
    page.route(
        f"{live.url}/page.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=body),
    )
    page.goto(f"{live.url}/page.html")
    page.wait_for_function(
        "document.getElementById('out').textContent.endsWith('completed')", timeout=30_000
    )
    assert page.inner_text("#out") == "It holds notes.\ncompleted"
