"""`sessiond serve`: the settings, the database lock, uvicorn with sessiond's connection
protocol, and a drain on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from server import config
from server.app import create_app
from server.cli import connections, logs
from server.config import Settings
from server.store import open_store
from server.store.kind import is_postgres, shown
from server.store.lock import DatabaseInUse, DatabaseLock

log = logging.getLogger("sessiond")
GC_THRESHOLD = 20_000  # allocations between first-generation collections (Python's default: 700)


class Server(uvicorn.Server):
    """uvicorn, with SIGTERM/SIGINT also starting the runner's drain at once. While running
    runs finish (the grace period) it keeps listening and answers every new request 503
    (server/api/guard.py), where uvicorn alone would stop listening at once."""

    def __init__(self, cfg: uvicorn.Config, app: Any) -> None:
        super().__init__(cfg)
        self.sessiond_app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runner = getattr(self.sessiond_app.state, "runner", None)
        if runner is not None and self.loop is not None and not self.should_exit:
            self.loop.call_soon_threadsafe(runner.begin_shutdown)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.sessiond_app.state.draining = True
        runner = getattr(self.sessiond_app.state, "runner", None)
        if runner is not None and not self.force_exit:
            await runner.shutdown()  # the lifespan's own call then finds it done
        await super().shutdown(sockets)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How the app is served: by `sessiond serve`, and by the tests' servers."""
    cap = settings.max_connections or connections.default_max_connections()
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s) + 2,
        "loop": "auto",
        "http": connections.protocol_class(settings.request_timeout_s, cap),
        # sessiond logs each request itself (api/observe.py), and uvicorn's own lines go
        # through the root logger, in sessiond's format (cli/logs.py)
        "access_log": False,
        "log_config": None,
        **overrides,
    }
    return uvicorn.Config(app, **values)


def log_start(settings: Settings, cfg: uvicorn.Config) -> None:
    cap = settings.max_connections or connections.default_max_connections()
    log.info(
        "database %s; listening on %s:%d; allowed roots: %s; CORS origins: %s",
        shown(settings.db) if is_postgres(settings.db) else Path(settings.db).resolve(),
        cfg.host,
        cfg.port,
        ", ".join(settings.allow_roots) or "none",
        ", ".join(settings.cors_origins) or "none (same-origin pages only)",
    )
    log.info("request timeout %g s; at most %d connections", settings.request_timeout_s, cap)


def tune_gc() -> None:
    """Fewer, cheaper collections for a long-running server. Everything loaded by now lives as
    long as the process: frozen, no collection walks it again. Streams allocate a few
    short-lived containers per event, so the default first threshold (700) meant a collection
    every few dozen events; most of what a stream allocates is freed by reference counting
    anyway, and what forms cycles waits a little longer to be freed."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def quiet_logging_overhead() -> None:
    """Skip what no format of ours prints: the caller's file and line (a stack walk per
    record), thread and process names (the logging HOWTO's "Optimization" settings).
    With the access log on, logging was 7 % of the event loop's time in short turns."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


async def exposure(settings: Settings) -> str | None:
    """Why the server must not start as configured (None: it may): auth required and no key,
    or auth off on an address other hosts reach, unless the operator said --insecure."""
    store = open_store(settings.db)
    await store.open()
    try:
        made = await store.keys.made()
    finally:
        await store.close()
    make = f"sessiond keys create --name NAME --scope admin --db {settings.db}"
    if made == 0 and settings.auth == "required":
        return f"--auth required, but the database has no API key; make one with: {make}"
    if made == 0 and not is_loopback(settings.host):
        if not settings.insecure:
            return (
                f"refusing to listen on {settings.host} with auth off: anyone who reaches it "
                f"could run agents and read every session; make an API key ({make}) or pass "
                "--insecure"
            )
        log.warning("auth is off and %s is reachable from other hosts (--insecure)", settings.host)
    return None


def serve(args: argparse.Namespace) -> int:
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = config.load(cli, config_file=args.config)
    except ValueError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format, settings.log_level)
    quiet_logging_overhead()
    try:  # before anything touches the database: a second server must change nothing
        lock = DatabaseLock(settings.db).acquire()
    except DatabaseInUse as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 1
    refusal = asyncio.run(exposure(settings))
    if refusal is not None:
        print(f"sessiond: {refusal}", file=sys.stderr)
        lock.release()
        return 2
    app = create_app(settings, db_lock=lock)
    tune_gc()
    cfg = uvicorn_config(app, settings)
    log_start(settings, cfg)
    Server(cfg, app).run()
    return 0
