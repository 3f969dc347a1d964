"""The `sessiond` command: `sessiond serve` runs the server; `sessiond chat` and `sessiond
sessions …` talk to a running one over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, TextIO

import msgspec
import uvicorn

from server import chat, config, connections
from server.app import create_app
from server.chat import Client, ClientError, add_url_argument
from server.config import Settings
from server.store.lock import DatabaseInUse, DatabaseLock

log = logging.getLogger("sessiond")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GC_THRESHOLD = 20_000  # allocations between first-generation collections (Python's default: 700)


# Every command with its one-line help; `sessiond --help` lists them all, nested ones too.
COMMANDS = {
    "serve": "run the HTTP server",
    "chat": "chat with an agent in the terminal",
    "sessions": "list, show, delete, export, import sessions",
    "sessions ls": "list sessions, most recently active first",
    "sessions show": "print a session's transcript",
    "sessions rm": "delete sessions (a running run is cancelled first)",
    "sessions export": "export one session (json, jsonl, markdown) or a zip bundle of many",
    "sessions import": "import a json export or a zip bundle",
}


def command_list() -> str:
    width = max(map(len, COMMANDS)) + 2
    return "commands:\n" + "\n".join(f"  sessiond {n:<{width}}{h}" for n, h in COMMANDS.items())


MIB = 1024 * 1024
_DEFAULTS = {
    field.name: field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    for field in msgspec.structs.fields(Settings)
}


def setting_help(field: str, what: str, default: str | None = None) -> str:
    """Help for a serve flag that sets Settings.<field>: the default shown and the env
    variable named come from Settings, so that the help cannot disagree with them. `default`
    words a default that is no plain value (None, or computed at start)."""
    return f"{what} (default{default_text(field, default)}; env SESSIOND_{field.upper()})"


def default_text(field: str, default: str | None = None) -> str:
    value = _DEFAULTS[field]
    if default is not None:
        return f": {default}"
    match value:
        case bool():
            return " on" if value else ": off"
        case int() if field.endswith("_bytes") and value >= MIB and value % MIB == 0:
            return f" {value // MIB} MiB"
        case int() | float():
            return f" {value:g}"
        case str():
            return f" {value}"
        case []:
            return ": none"
    raise ValueError(f"setting {field}: say in words what its default is")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessiond",
        description=__doc__,
        epilog=command_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help=COMMANDS["serve"])
    serve.add_argument("--host", help=setting_help("host", "address to bind"))
    serve.add_argument("--port", type=int, help=setting_help("port", "port"))
    serve.add_argument("--db", help=setting_help("db", "SQLite file"))
    serve.add_argument("--config", help="settings file (default ./sessiond.toml if present)")
    serve.add_argument(
        "--allow-root",
        action="append",
        dest="allow_roots",
        help=setting_help(
            "allow_roots",
            "a folder under which session work_dirs may lie (repeatable)",
            "the current folder",
        ),
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        dest="shutdown_grace_s",
        help=setting_help("shutdown_grace_s", "seconds running runs get to finish on SIGTERM"),
    )
    serve.add_argument(
        "--ping-interval",
        type=float,
        dest="ping_s",
        help=setting_help("ping_s", "seconds of quiet before an SSE ping"),
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        dest="max_body_bytes",
        help=setting_help("max_body_bytes", "largest accepted request body"),
    )
    serve.add_argument(
        "--max-import-bytes",
        type=int,
        dest="max_import_bytes",
        help=setting_help("max_import_bytes", "largest accepted POST /sessions/import body"),
    )
    limits = serve.add_argument_group("run limits")
    limits.add_argument(
        "--max-run-seconds",
        type=float,
        dest="run_max_seconds",
        help=setting_help(
            "run_max_seconds", "a run's deadline when its agent sets no max_run_seconds"
        ),
    )
    limits.add_argument(
        "--max-run-seconds-ceiling",
        type=float,
        dest="run_max_seconds_ceiling",
        help=setting_help(
            "run_max_seconds_ceiling",
            "the longest deadline any agent gets; larger values are clamped",
        ),
    )
    limits.add_argument(
        "--max-step-output-bytes",
        type=int,
        dest="max_step_output_bytes",
        help=setting_help(
            "max_step_output_bytes", "bytes of text and tool input one model step may produce"
        ),
    )
    limits.add_argument(
        "--provider-idle-timeout",
        type=float,
        dest="provider_idle_timeout_s",
        help=setting_help(
            "provider_idle_timeout_s", "seconds an upstream stream may send nothing but pings"
        ),
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        help=setting_help(
            "cors_origins",
            "an origin whose browser pages may call the API, e.g. http://localhost:3000 "
            "(repeatable; '*' for any)",
        ),
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        dest="request_timeout_s",
        help=setting_help(
            "request_timeout_s", "seconds a request's headers, then its body, may take to arrive"
        ),
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        dest="max_connections",
        help=setting_help(
            "max_connections",
            "open connections at most; past them 503",
            "the open-file limit less 256",
        ),
    )
    serve.add_argument(
        "--default-model",
        dest="default_model",
        help=setting_help(
            "default_model",
            "model of the built-in default agent; a local OpenAI-compatible server needs its own",
            "its provider's, e.g. claude-sonnet-4-5 or gpt-4o-mini",
        ),
    )
    serve.add_argument(
        "--provider-base-url",
        action="append",
        dest="provider_base_urls",
        metavar="NAME=URL",
        help=setting_help(
            "provider_base_urls",
            "an endpoint of provider NAME (anthropic, openai) that gets the server's key for "
            "it, besides its public API and its *_BASE_URL variable (repeatable; agents' other "
            "base_urls get no server key)",
        ),
    )
    serve.add_argument(
        "--agent-key-env",
        action="append",
        dest="agent_key_env",
        metavar="PATTERN",
        help=setting_help(
            "agent_key_env",
            "a glob of environment variable names an agent may name in options.api_key_env "
            "as its own key (repeatable)",
        ),
    )
    serve.add_argument(
        "--allow-run-command",
        action="store_const",
        const=True,
        dest="allow_run_command",
        help=setting_help(
            "allow_run_command",
            "let agents have the run_command tool, a shell in the session's work_dir, "
            "confined by bubblewrap",
        ),
    )
    serve.add_argument(
        "--allow-unsandboxed-commands",
        action="store_const",
        const=True,
        dest="allow_unsandboxed_commands",
        help=setting_help(
            "allow_unsandboxed_commands",
            "run run_command's commands without a sandbox where bubblewrap is missing",
            "off, they are refused",
        ),
    )
    serve.add_argument(
        "--log-level",
        dest="log_level",
        help=setting_help("log_level", "debug, info, warning, error"),
    )
    talk = commands.add_parser("chat", help=COMMANDS["chat"])
    talk.add_argument("--session", help="session name to create or resume (default: a new one)")
    talk.add_argument("--agent", help="agent id (default: the session's, or the default agent)")
    talk.add_argument(
        "--work-dir",
        help="the folder a new session's tools work in (default: the current folder, when the "
        "server allows it)",
    )
    add_url_argument(talk)
    manage = commands.add_parser("sessions", help=COMMANDS["sessions"])
    add_session_commands(manage)
    return parser


def add_session_commands(parent: argparse.ArgumentParser) -> None:
    commands = parent.add_subparsers(dest="action", required=True)
    ls = commands.add_parser("ls", help=COMMANDS["sessions ls"])
    ls.add_argument("--status", help="idle, running, requires_action, failed or archived")
    ls.add_argument("--tag", action="append", default=[], help="only with this tag (repeatable)")
    ls.add_argument("--agent", help="only of this agent id")
    ls.add_argument("--work-dir", help="only of this folder")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")
    show = commands.add_parser("show", help=COMMANDS["sessions show"])
    show.add_argument("session", help="id or name")
    show.add_argument("--json", action="store_true", help="print the session's JSON instead")
    rm = commands.add_parser("rm", help=COMMANDS["sessions rm"])
    rm.add_argument("sessions", nargs="+", help="ids or names")
    export = commands.add_parser("export", help=COMMANDS["sessions export"])
    export.add_argument("sessions", nargs="*", help="ids or names (none: every session)")
    export.add_argument("--format", choices=("json", "jsonl", "markdown", "zip"))
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    export.add_argument(
        "--with-agents",
        action="store_true",
        help="include the sessions' agents (json and zip), for import onto another server",
    )
    imp = commands.add_parser("import", help=COMMANDS["sessions import"])
    imp.add_argument("file", help="the file ('-' for stdin)")
    imp.add_argument("--keep-ids", action="store_true", help="keep the exported ids")
    imp.add_argument("--agent", help="give every imported session this agent")
    imp.add_argument("--work-dir", help="give every imported session this work_dir")
    for parser in (ls, show, rm, export, imp):
        add_url_argument(parser)


def sessions(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    client = Client(args.url)
    try:
        action = {
            "ls": sessions_ls,
            "show": sessions_show,
            "rm": sessions_rm,
            "export": sessions_export,
            "import": sessions_import,
        }
        return action[args.action](client, args, out)
    except (ClientError, OSError) as exc:
        print(f"sessiond sessions {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def sessions_ls(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"limit": args.limit, "tag": args.tag}
    for key, value in (("status", args.status), ("agent_id", args.agent)):
        if value:
            params[key] = value
    if args.work_dir:
        params["work_dir"] = str(Path(args.work_dir).resolve())
    page = client.json("GET", "/sessions", params=params)
    if args.json:
        out.write(json.dumps(page["data"], indent=2) + "\n")
        return 0
    rows = [("ID", "NAME", "STATUS", "MSGS", "UPDATED", "TITLE")]
    for s in page["data"]:
        rows.append(
            (
                s["id"],
                s["name"] or "-",
                s["status"],
                str(s["message_count"]),
                s["updated_at"][:19].replace("T", " "),
                s["title"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    return 0


def sessions_show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        session = client.json("GET", f"/sessions/{args.session}")
        out.write(json.dumps(session, indent=2) + "\n")
    else:
        path = f"/sessions/{args.session}/export"
        out.write(client.request("GET", path, params={"format": "markdown"}).text)
    return 0


def sessions_rm(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    status = 0
    for key in args.sessions:
        try:
            client.request("DELETE", f"/sessions/{key}")
            out.write(f"deleted {key}\n")
        except ClientError as exc:
            print(f"sessiond sessions rm: {key}: {exc}", file=sys.stderr)
            status = 1
    return status


def sessions_export(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    form = args.format or ("json" if len(args.sessions) == 1 else "zip")
    if form != "zip" and len(args.sessions) != 1:
        raise ClientError(f"--format {form} exports exactly one session; use zip for many")
    params = {"with_agents": "true"} if args.with_agents else {}
    if form == "zip":
        body = {"ids": args.sessions} if args.sessions else {}
        data = client.request("POST", "/sessions/export", json=body, params=params).content
    else:
        path = f"/sessions/{args.sessions[0]}/export"
        data = client.request("GET", path, params={"format": form, **params}).content
    if args.output:
        Path(args.output).write_bytes(data)
        out.write(f"wrote {len(data)} bytes to {args.output}\n")
        return 0
    if form == "zip" and out.isatty():
        raise ClientError("a zip bundle is binary; write it to a file with -o FILE")
    _binary(out).write(data)
    return 0


def sessions_import(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    kind = "application/zip" if data.startswith(ZIP_MAGIC) else "application/json"
    params = {"keep_ids": "true"} if args.keep_ids else {}
    if args.agent:
        params["agent_id"] = args.agent
    if args.work_dir:
        params["work_dir"] = str(Path(args.work_dir).resolve())
    result = client.json(
        "POST", "/sessions/import", content=data, params=params, headers={"content-type": kind}
    )
    sessions = result["sessions"]
    out.write(
        f"imported {len(sessions)} session(s), {result['message_count']} messages, "
        f"{result['run_count']} runs\n"
    )
    for session in sessions:
        out.write(f"  {session['id']}  {session['name'] or '-'}  {session['title'] or ''}\n")
    for agent in result.get("agents", []):
        out.write(f"created agent {agent['id']}  {agent['name']}\n")
    answered = sum(len(item["tool_use_ids"]) for item in result.get("repaired", []))
    if answered:
        out.write(f"answered {answered} tool call(s) the history held no result for\n")
    return 0


def _binary(out: TextIO) -> BinaryIO:
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        raise ClientError("cannot write binary output here; use -o FILE")
    out.flush()
    return buffer  # type: ignore[no-any-return]


class Server(uvicorn.Server):
    """uvicorn, with SIGTERM/SIGINT also starting the runner's drain at once. While running
    runs finish (the grace period) it keeps listening and answers every new request 503
    (server/edge.py), where uvicorn alone would stop listening at once."""

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
        **overrides,
    }
    return uvicorn.Config(app, **values)


def log_start(settings: Settings, cfg: uvicorn.Config) -> None:
    cap = settings.max_connections or connections.default_max_connections()
    log.info(
        "database %s; listening on %s:%d; allowed roots: %s; CORS origins: %s",
        Path(settings.db).resolve(),
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
    quiet_logging_overhead()
    try:  # before anything touches the database: a second server must change nothing
        lock = DatabaseLock(settings.db).acquire()
    except DatabaseInUse as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, db_lock=lock)
    tune_gc()
    cfg = uvicorn_config(app, settings)
    log_start(settings, cfg)
    Server(cfg, app).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "chat":
        return chat.main(args.url, args.session, args.agent, args.work_dir)
    if args.command == "sessions":
        return sessions(args)
    return 2
