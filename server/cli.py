"""The `sessiond` command: `sessiond serve` runs the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

from server import config
from server.app import create_app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessiond", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; env SESSIOND_HOST)")
    serve.add_argument("--port", type=int, help="port (default 2323; env SESSIOND_PORT)")
    serve.add_argument("--db", help="SQLite file (default ./data/sessiond.db; env SESSIOND_DB)")
    serve.add_argument("--config", help="settings file (default ./sessiond.toml if present)")
    serve.add_argument(
        "--allow-root",
        action="append",
        dest="allow_roots",
        help="a folder under which session work_dirs may lie (repeatable; default: the "
        "current folder)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        dest="shutdown_grace_s",
        help="seconds running runs get to finish on SIGTERM (default 10)",
    )
    serve.add_argument(
        "--ping-interval",
        type=float,
        dest="ping_s",
        help="seconds of quiet before an SSE ping (default 15)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        dest="max_body_bytes",
        help="largest accepted request body (default 1 MiB)",
    )
    serve.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    return parser


class Server(uvicorn.Server):
    """uvicorn, with SIGTERM/SIGINT also starting the runner's drain at once."""

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


def serve(args: argparse.Namespace) -> int:
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        settings = config.load(cli, config_file=args.config)
    except ValueError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    cfg = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 2,
        loop="auto",
        http="auto",
    )
    Server(cfg, app).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2
