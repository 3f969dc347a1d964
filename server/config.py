"""Settings: CLI flags > SESSIOND_* environment > sessiond.toml > defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 2323
    db: str = "./data/sessiond.db"
    max_body_bytes: int = 1024 * 1024
    max_import_bytes: int = 64 * 1024 * 1024  # POST /sessions/import has a limit of its own
    sweep_interval_s: float = 60.0  # how often sessions past their TTL are deleted
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
    log_level: str = "info"
    # The built-in default agent's model (None: its provider's default, e.g. for a local
    # OpenAI-compatible server whose models are not OpenAI's)
    default_model: str | None = None
    # Origins whose pages may call the API (EventSource, fetch) from a browser; "*" for any.
    cors_origins: list[str] = []


FIELDS = Settings.__struct_fields__
# Environment variables that hold lists: separated by os.pathsep (":" on Unix).
_LIST_FIELDS = {"allow_roots", "cors_origins"}


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in FIELDS:
        value = env.get(f"SESSIOND_{name.upper()}")
        if value is None or value == "":
            continue
        found[name] = value.split(os.pathsep) if name in _LIST_FIELDS else value
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


def load(
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge the sources; raises ValueError naming the bad setting."""
    env = os.environ if env is None else env
    path = Path(config_file or env.get("SESSIOND_CONFIG", "sessiond.toml"))
    merged: dict[str, Any] = {}
    merged.update(from_file(path))
    merged.update(from_env(env))
    merged.update({k: v for k, v in cli.items() if v is not None})
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid setting: {exc}") from exc
