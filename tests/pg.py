"""A throwaway PostgreSQL for the tests: a cluster made with the Debian package's `initdb`
and started with its `pg_ctl` on a free loopback port (as the `postgres` user when the tests
run as root, since PostgreSQL refuses to run as root), or the server SESSIOND_TEST_PG_URL
names. Each test gets a database of its own. Without either the tests that need one skip
with one line saying why, or fail where SESSIOND_REQUIRE_PG=1 (CI) says so."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.live import free_port

T = TypeVar("T")
_names = itertools.count(1)


class Databases:
    """The database the tests of a suite that runs on both (conftest's `database`) are on
    now: a PostgreSQL URL, or None for an SQLite file in the test's tmp_path. It lives here,
    not in conftest, since pytest imports conftest under a name of its own and the tests
    import `tests.conftest`: two modules, where this one is imported once."""

    url: str | None = None
    server: str | None = None  # the server it is on
    by_root: dict[str, str] = {}  # a test's other folders (a second server) get their own

    @classmethod
    def of(cls, root: str) -> str | None:
        """The PostgreSQL database for settings made in `root`: the test's first folder
        gets `url`, each other folder a new database of its own."""
        if cls.url is None or cls.server is None:
            return None
        if not cls.by_root:
            cls.by_root[root] = cls.url
        if root not in cls.by_root:
            cls.by_root[root] = new_database(cls.server)
        return cls.by_root[root]


def sqlite_only(test: Callable[..., Any]) -> Callable[..., Any]:
    """A test of SQLite's own file, tables or migrations: skipped on the PostgreSQL run."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if Databases.url is not None:
            pytest.skip("about SQLite's own file and tables")
        return test(*args, **kwargs)

    return wrapper


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a loop of its own, from sync or async code alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class Cluster:
    """A PostgreSQL server of the tests' own, gone when `stop` is called."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="sessiond-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")

    def start(self) -> Cluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off "
            "-c max_connections=300 -c shared_buffers=64MB"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """The same server over its Unix socket, as a client on the same host connects."""
        return f"postgresql://{self.user}@/postgres?host={self.root}&port={self.port}"

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            ),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import asyncpg

    name = f"t{os.getpid()}_{next(_names)}_{int(time.monotonic() * 1000) % 100000}"

    async def make() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    _in_thread(make)
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def rows_of(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    """The rows of a query on a PostgreSQL database, as tuples."""
    import asyncpg

    async def read() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return _in_thread(read)


def table_contents(url: str) -> dict[str, list[str]]:
    """Every table's rows (as sorted reprs) of a PostgreSQL database."""
    names = rows_of(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name <> 'schema_step'",
    )
    return {
        str(name): sorted(map(repr, rows_of(url, f'SELECT * FROM "{name}"'))) for (name,) in names
    }


def writer_connection(url: str) -> tuple[Any, Callable[[], None]]:
    """The store's writer connection to a migrated database, driven from this thread, inside
    one transaction; and what closes it."""
    from server.store.pg import PgConnection, connect, migrate

    loop = asyncio.new_event_loop()
    raw = loop.run_until_complete(connect(url))
    loop.run_until_complete(migrate(raw))
    conn = PgConnection(loop, raw)
    conn.execute("BEGIN")

    def close() -> None:
        loop.run_until_complete(raw.close())
        loop.close()

    return conn, close
