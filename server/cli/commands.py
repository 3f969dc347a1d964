"""The `sessiond` command line: every command, its flags and their help. A serve flag's
default and environment variable come from `Settings`, so the help cannot drift from them."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from server.cli.remote import add_url_argument
from server.config import Settings

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
    "keys": "create, list and revoke API keys (on the database, with or without a server)",
    "keys create": "make a new key and print it, this once",
    "keys list": "list keys: id, name, tenant, scope, created, last used (never the key)",
    "keys revoke": "revoke a key: refused within a second, no restart needed",
    "config": "the server's effective settings",
    "config show": "print each setting, where it came from (flag, env, file, default), secrets "
    "masked",
    "backup": "copy the database consistently, even while a server writes to it",
    "doctor": "check the database (schema, integrity, WAL, stuck runs, broken histories)",
    "migrate": "apply the schema steps a database lacks (SQLite file or PostgreSQL URL)",
    "copy": "copy an SQLite database into an empty PostgreSQL one, every id and event intact",
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
    add_serve_flags(commands.add_parser("serve", help=COMMANDS["serve"]))
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
    add_key_commands(commands.add_parser("keys", help=COMMANDS["keys"]))
    add_ops_commands(commands)
    return parser


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """The flags of `sessiond serve`, which `sessiond config show` takes too."""
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
        "--lease-timeout",
        type=float,
        dest="lease_timeout_s",
        help=setting_help(
            "lease_timeout_s",
            "seconds after which the runs of a process gone from a shared PostgreSQL are "
            "interrupted by another",
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
        "--auth",
        choices=("auto", "required"),
        help=setting_help(
            "auth",
            "auto: API keys are needed once one exists; required: refuse to start without one",
        ),
    )
    serve.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        help=setting_help(
            "insecure", "allow a non-loopback --host with auth off (anyone reaching it is trusted)"
        ),
    )
    serve.add_argument(
        "--rate-runs-per-min",
        type=int,
        dest="rate_runs_per_min",
        help=setting_help("rate_runs_per_min", "runs one API key may start in any minute"),
    )
    serve.add_argument(
        "--max-streams-per-key",
        type=int,
        dest="max_streams_per_key",
        help=setting_help("max_streams_per_key", "event streams one API key may hold open"),
    )
    serve.add_argument(
        "--stream-token-ttl",
        type=float,
        dest="stream_token_ttl",
        help=setting_help(
            "stream_token_ttl", "seconds an events_url's token (for EventSource) stays good"
        ),
    )
    serve.add_argument(
        "--webhook-retry-max",
        type=float,
        dest="webhook_retry_max",
        help=setting_help(
            "webhook_retry_max", "seconds a webhook delivery is retried before it is given up"
        ),
    )
    serve.add_argument(
        "--webhook-retry-base",
        type=float,
        dest="webhook_retry_base",
        help=setting_help(
            "webhook_retry_base", "seconds before a webhook's first retry (doubling, jittered)"
        ),
    )
    serve.add_argument(
        "--webhook-poll",
        type=float,
        dest="webhook_poll_s",
        help=setting_help("webhook_poll_s", "seconds between looks at the webhook outbox"),
    )
    serve.add_argument(
        "--webhook-allow-private",
        action="store_const",
        const=True,
        dest="webhook_allow_private",
        help=setting_help(
            "webhook_allow_private", "let webhooks go to loopback and private addresses"
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
    serve.add_argument(
        "--log-format",
        choices=("json", "text"),
        dest="log_format",
        help=setting_help(
            "log_format",
            "log lines as JSON objects or as text",
            "json, or text when stdout is a terminal",
        ),
    )
    serve.add_argument(
        "--log-content",
        action="store_const",
        const=True,
        dest="log_content",
        help=setting_help(
            "log_content", "log each run's user message and tool inputs too (never keys)"
        ),
    )
    serve.add_argument(
        "--metrics-public",
        action="store_const",
        const=True,
        dest="metrics_public",
        help=setting_help(
            "metrics_public", "serve GET /metrics without an API key even with auth on"
        ),
    )


def add_ops_commands(commands: Any) -> None:
    config = commands.add_parser("config", help=COMMANDS["config"])
    actions = config.add_subparsers(dest="action", required=True)
    add_serve_flags(actions.add_parser("show", help=COMMANDS["config show"]))
    backup = commands.add_parser("backup", help=COMMANDS["backup"])
    backup.add_argument("path", help="the file to write (must not exist)")
    doctor = commands.add_parser("doctor", help=COMMANDS["doctor"])
    doctor.add_argument(
        "--max-wal-bytes",
        type=int,
        default=64 * MIB,
        help="a write-ahead log larger than this is a problem (default 64 MiB)",
    )
    migrate = commands.add_parser("migrate", help=COMMANDS["migrate"])
    migrate.add_argument("--db", help=setting_help("db", "SQLite file or postgresql:// URL"))
    migrate.add_argument("--config", help="settings file (default ./sessiond.toml if present)")
    copy = commands.add_parser("copy", help=COMMANDS["copy"])
    copy.add_argument("--from", dest="source", required=True, help="the SQLite file")
    copy.add_argument("--to", dest="target", required=True, help="the postgresql:// URL")
    for parser in (backup, doctor):
        parser.add_argument("--db", help=setting_help("db", "SQLite file"))
        parser.add_argument("--config", help="settings file (default ./sessiond.toml if present)")


def add_key_commands(parent: argparse.ArgumentParser) -> None:
    commands = parent.add_subparsers(dest="action", required=True)
    create = commands.add_parser("create", help=COMMANDS["keys create"])
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scope",
        choices=("read", "write", "admin"),
        default="write",
        help="read: GET routes only; write: every route but /keys; admin: all (default write)",
    )
    create.add_argument(
        "--tenant",
        default="default",
        help="the tenant whose data the key sees and makes (default: default, where "
        "everything made without auth lives)",
    )
    listing = commands.add_parser("list", help=COMMANDS["keys list"])
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    revoke = commands.add_parser("revoke", help=COMMANDS["keys revoke"])
    revoke.add_argument("id", help="the key's id (from keys list)")
    for parser in (create, listing, revoke):
        parser.add_argument("--db", help=setting_help("db", "SQLite file"))
        parser.add_argument("--config", help="settings file (default ./sessiond.toml if present)")


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
