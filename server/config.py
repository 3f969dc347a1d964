"""Settings: CLI flags > SESSIOND_* environment > sessiond.toml > defaults."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from server.providers import access

Positive = Annotated[float, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 2323
    db: str = "./data/sessiond.db"  # an SQLite file, or a postgresql:// URL
    # The stream tokens' sealing key (None: `<db>.key` beside an SQLite file; for PostgreSQL
    # ./data/sessiond-postgres.key). Every process on one PostgreSQL must have the same one.
    key_file: str | None = None
    max_body_bytes: int = 1024 * 1024
    max_import_bytes: int = 64 * 1024 * 1024  # POST /sessions/import has a limit of its own
    sweep_interval_s: float = 60.0  # how often sessions past their TTL are deleted
    # Several processes on one PostgreSQL: a process gone this long has lost its sessions'
    # leases, and another interrupts its runs and repairs their histories.
    lease_timeout_s: Positive = 15.0
    ping_s: float = 15.0
    sse_retry_ms: int = 3000
    sse_send_timeout_s: float = 30.0
    shutdown_grace_s: float = 10.0
    allow_roots: list[str] = msgspec.field(default_factory=lambda: [os.getcwd()])
    event_flush_ms: float = 200.0  # see store/sqlite.py: durability against commits
    tool_timeout_s: float = 120.0
    tool_concurrency: int = 8
    command_timeout_s: float = 30.0
    # run_command is a shell for whoever can define agents: the operator turns it on, and
    # it runs in bubblewrap unless the operator also allows running it without.
    allow_run_command: bool = False
    allow_unsandboxed_commands: bool = False
    provider_max_retries: int = 3
    provider_connect_timeout_s: float = 10.0
    provider_read_timeout_s: float = 120.0
    # Limits on every run. Its deadline: the agent's max_run_seconds, else run_max_seconds,
    # never above run_max_seconds_ceiling (time paused for client tools does not count). A
    # step's output: the bytes of its text and tool input, each delta with its event's
    # framing. An upstream stream's idle time: seconds without an event other than pings.
    run_max_seconds: Positive = 3600.0
    run_max_seconds_ceiling: Positive = 86400.0
    max_step_output_bytes: Annotated[int, msgspec.Meta(gt=0)] = 8 * 1024 * 1024
    provider_idle_timeout_s: Positive = 90.0
    log_level: str = "info"
    # Log lines as JSON objects, or as text (None: JSON unless stdout is a terminal). Message
    # content and tool input are logged only with log_content; keys never are.
    log_format: Literal["json", "text"] | None = None
    log_content: bool = False
    # GET /metrics without an API key, even with auth on (for a scraper on a trusted network).
    metrics_public: bool = False
    # The built-in default agent's model (None: its provider's default, e.g. for a local
    # OpenAI-compatible server whose models are not OpenAI's)
    default_model: str | None = None
    # Origins whose pages may call the API (EventSource, fetch) from a browser; "*" for any.
    cors_origins: list[str] = []
    # The HTTP edge (server/cli/connections.py): how long a request's headers, then its body, may
    # take to arrive; how many connections may be open (None: the open-file limit less a
    # reserve for the database, the provider client and tools).
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Provider credentials (providers/access.py): "NAME=URL" endpoints besides a provider's
    # own that get the server's key for it, and the variable-name patterns (globs) that an
    # agent may name in options.api_key_env.
    provider_base_urls: list[str] = []
    agent_key_env: list[str] = []
    # API keys (api/auth.py): "auto" turns auth on as soon as one key exists; "required"
    # refuses to start without one. With auth off, a host other than loopback needs
    # `insecure`: whoever reaches the port could then do anything.
    auth: Literal["auto", "required"] = "auto"
    insecure: bool = False
    # Per API key (api/limits.py): runs started in any minute, streams open at once.
    rate_runs_per_min: Annotated[int, msgspec.Meta(ge=1)] = 120
    max_streams_per_key: Annotated[int, msgspec.Meta(ge=1)] = 100
    # Seconds a stream token (api/tokens.py: events_url for EventSource) stays good.
    stream_token_ttl: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] = 3600.0
    # Webhooks (server/webhooks/): how long a delivery is retried from the run's end before
    # it is given up; the first retry's delay (each next one doubles, with jitter, up to an
    # hour); how often the outbox is looked at when nothing wakes the sender; and whether
    # loopback and private addresses may be posted to.
    webhook_retry_max: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] = 86400.0
    webhook_retry_base: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    webhook_poll_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    webhook_allow_private: bool = False

    def __post_init__(self) -> None:
        access.parse_base_urls(self.provider_base_urls)  # a ValueError names the bad entry


FIELDS = Settings.__struct_fields__
# Environment variables that hold lists: separated by commas and/or whitespace (not ":",
# which every origin and URL holds, e.g. http://127.0.0.1:8765).
_LIST_FIELDS = {"allow_roots", "cors_origins", "agent_key_env", "provider_base_urls"}
_LIST_SEPARATOR = re.compile(r"[,\s]+")


def split_list(value: str) -> list[str]:
    return [part for part in _LIST_SEPARATOR.split(value) if part]


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in FIELDS:
        value = env.get(f"SESSIOND_{name.upper()}")
        if value is None or value == "":
            continue
        found[name] = split_list(value) if name in _LIST_FIELDS else value
    return found


def from_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    section = data.get("sessiond", data)
    if not isinstance(section, dict):
        raise ValueError(f"{path}: expected a table of settings")
    return section


Source = Literal["flag", "env", "file", "default"]


def load(
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge the sources; raises ValueError naming the bad setting."""
    return explain(cli, env, config_file)[0]


def explain(
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> tuple[Settings, dict[str, Source]]:
    """The settings, and where each came from (a flag, the environment, the file, or the
    default); raises ValueError naming the bad setting."""
    env = os.environ if env is None else env
    path = Path(config_file or env.get("SESSIOND_CONFIG", "sessiond.toml"))
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = dict.fromkeys(FIELDS, "default")
    given: list[tuple[Source, Mapping[str, Any]]] = [
        ("file", from_file(path)),
        ("env", from_env(env)),
        ("flag", {k: v for k, v in cli.items() if v is not None}),
    ]
    for source, values in given:
        merged.update(values)
        sources.update(dict.fromkeys((k for k in values if k in sources), source))
    try:
        return msgspec.convert(merged, Settings, strict=False), sources
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid setting: {exc}") from exc
