from __future__ import annotations

import atexit
import importlib.util
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
from tests import pg
from tests.live import ThreadServer
from tests.pg import Cluster, Databases


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": Databases.of(str(tmp_path)) or str(tmp_path / "sessiond.db"),
        "key_file": str(tmp_path / "sessiond.key") if Databases.url else None,
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


_cluster: Cluster | None = None


def pg_server() -> str:
    """A PostgreSQL server's URL for the tests: SESSIOND_TEST_PG_URL's, else a throwaway
    cluster of the tests' own (started once, stopped at exit). Skips, or fails where
    SESSIOND_REQUIRE_PG=1, when neither can be had."""
    global _cluster
    given = os.environ.get("SESSIOND_TEST_PG_URL")
    if given:
        return given
    if _cluster is None:
        bindir = pg.binaries()
        problem = None
        if bindir is None:
            problem = (
                "PostgreSQL is not installed (Debian package postgresql; see tests/system-deps.sh)"
            )
        elif importlib.util.find_spec("asyncpg") is None:
            problem = "asyncpg is not installed (pip install -e '.[postgres]')"
        if problem is not None:
            if os.environ.get("SESSIOND_REQUIRE_PG") == "1":
                pytest.fail(problem)
            pytest.skip(f"no PostgreSQL: {problem}, or set SESSIOND_TEST_PG_URL")
        assert bindir is not None
        _cluster = pg.Cluster(bindir).start()
        atexit.register(_cluster.stop)
    return _cluster.url


@pytest.fixture
def pg_url() -> str:
    """A new, empty PostgreSQL database."""
    return pg.new_database(pg_server())


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once on each database: `make_settings` gives it a PostgreSQL database of its
    own on the second run. A suite takes it with `pytestmark = pytest.mark.usefixtures(...)`."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    Databases.server = pg_server()
    Databases.url = pg.new_database(Databases.server)
    Databases.by_root = {}
    try:
        yield "postgres"
    finally:
        Databases.url = Databases.server = None
        Databases.by_root = {}


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
