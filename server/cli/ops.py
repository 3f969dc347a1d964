"""The operator's commands on a database and a configuration, with or without a server
running: `sessiond config show`, `sessiond backup`, `sessiond doctor`."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import msgspec

from server import config
from server.errors import StoreError
from server.providers.access import SERVER_KEYS
from server.store import is_postgres, open_store
from server.store.backup import BackupError, backup
from server.store.doctor import examine
from server.store.kind import shown
from server.store.lock import DatabaseInUse, DatabaseLock

MASK = "********"
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
# Settings that hold a secret, masked whatever their value (none today; a new one goes here)
SECRET_SETTINGS: frozenset[str] = frozenset()


def masked(name: str, value: Any) -> Any:
    if name in SECRET_SETTINGS and value:
        return MASK
    if isinstance(value, str):
        return _USERINFO.sub(f"{MASK}@", value)  # a password in a URL
    if isinstance(value, list):
        return [masked(name, item) for item in value]
    return value


def config_show(
    args: argparse.Namespace, out: TextIO | None = None, env: Mapping[str, str] | None = None
) -> int:
    out = out or sys.stdout
    env = os.environ if env is None else env
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "action", "config")}
    try:
        settings, sources = config.explain(cli, env, args.config)
    except ValueError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 2
    values = msgspec.to_builtins(settings)
    rows = [(name, masked(name, values[name]), sources[name]) for name in config.FIELDS]
    # the provider keys the server would use: whether one is set, never what it is
    rows += [(key, MASK, "env") for key in sorted(SERVER_KEYS) if env.get(key)]
    width = max(len(name) for name, _, _ in rows)
    for name, value, source in rows:
        out.write(f"{name:<{width}}  {msgspec.json.encode(value).decode():<40}  {source}\n")
    return 0


def _settings(args: argparse.Namespace) -> config.Settings | None:
    try:
        return config.load({"db": args.db}, config_file=args.config)
    except ValueError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return None


def _sqlite_settings(args: argparse.Namespace, command: str) -> config.Settings | None:
    """Settings for a command that works on the SQLite file itself."""
    settings = _settings(args)
    if settings is not None and is_postgres(settings.db):
        print(
            f"sessiond: {command} works on an SQLite file; on PostgreSQL use its own tools "
            "(pg_dump, pg_restore)",
            file=sys.stderr,
        )
        return None
    return settings


def backup_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = _sqlite_settings(args, "backup")
    if settings is None:
        return 2
    try:
        copied = backup(settings.db, args.path)
    except BackupError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 1
    tables = ", ".join(f"{name} {count}" for name, count in copied.rows.items())
    out.write(
        f"copied {copied.total_rows} rows ({tables}) and {copied.bytes} bytes to {copied.path}\n"
    )
    return 0


def doctor(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings = _sqlite_settings(args, "doctor")
    if settings is None:
        return 2
    checks = examine(settings.db, args.max_wal_bytes)
    for check in checks:
        out.write(f"{'ok' if check.ok else 'problem':<8} {check.name}: {check.detail}\n")
    problems = sum(not check.ok for check in checks)
    out.write(f"{settings.db}: {problems or 'no'} problem{'' if problems == 1 else 's'}\n")
    return 1 if problems else 0


def migrate_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Open the database, which applies the schema steps it lacks, and close it again."""
    out = out or sys.stdout
    settings = _settings(args)
    if settings is None:
        return 2

    async def run() -> None:
        store = open_store(settings.db)
        await store.open()
        await store.close()

    try:
        DatabaseLock(settings.db).acquire().release()  # not while a server has the file
        asyncio.run(run())
    except (DatabaseInUse, StoreError, RuntimeError) as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 1
    out.write(f"{shown(settings.db)}: schema up to date\n")
    return 0


def copy_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not is_postgres(args.target):
        print("sessiond: --to must be a postgresql:// URL", file=sys.stderr)
        return 2
    from server.store import pgcopy  # asyncpg is an optional dependency

    try:
        copied = asyncio.run(pgcopy.copy(args.source, args.target))
    except (pgcopy.CopyError, DatabaseInUse, StoreError) as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 1
    tables = ", ".join(f"{name} {count}" for name, count in copied.items())
    out.write(f"copied {tables} to {shown(args.target)}\n")
    return 0
