from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.config import Settings
from tests.live import ThreadServer


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": str(tmp_path / "sessiond.db"),
        "allow_roots": [str(tmp_path)],
        "event_flush_ms": 20.0,
    }
    values.update(overrides)
    return Settings(**values)


class AppClient(httpx.AsyncClient):
    """A client of the in-process app that knows the app, to wait on its store."""

    def __init__(self, app: Any) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://sessiond")
        self.app = app

    async def flush(self) -> None:
        """Wait until every write the server has queued so far is committed."""
        await self.app.state.store.db.flush()


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AppClient]:
    """The app in-process, lifespan included (for routes that do not stream)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ThreadServer]:
    server = ThreadServer(make_settings(tmp_path, ping_s=1.0)).start()
    try:
        yield server
    finally:
        server.stop()


def require_system(binary: str, package: str, strict_env: str = "SESSIOND_TEST_STRICT") -> str:
    """The path of a system program a test drives for real (`make test` installs it where it
    can): without it the test skips, or fails where SESSIOND_TEST_STRICT=1 (CI) says so, or,
    for the browser, SESSIOND_REQUIRE_BROWSER=1."""
    path = shutil.which(binary)
    if path is not None:
        return path
    message = f"{binary} is not installed (Debian package {package}; see tests/system-deps.sh)"
    strict = (os.environ.get(name) == "1" for name in ("SESSIOND_TEST_STRICT", strict_env))
    if any(strict):
        pytest.fail(message)
    pytest.skip(message)


CHROMIUM_ARGS = [  # headless, and no background connections to hosts this machine cannot reach
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    """The system's Chromium, driven by Playwright (which cannot fetch browsers of its own)."""
    path = require_system("chromium", "chromium", "SESSIOND_REQUIRE_BROWSER")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def scripted_agent(script: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    options = {"script": script, **extra.pop("options", {})}
    return {
        "name": extra.pop("name", "scripted"),
        "provider": "scripted",
        "options": options,
        **extra,
    }
