"""`sessiond keys …`: API keys, made, listed and revoked on the database itself, so that the
first admin key can be made before any key exists, with or without a server running on it
(SQLite serialises the writes; a running server sees a new key at its first use, and a
revoked one within a second)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

import msgspec

from server import config
from server.api.keys import issue
from server.errors import ApiError
from server.ids import now
from server.models import ApiKey
from server.store import Store, open_store


def keys(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cli = {"db": args.db}
    try:
        settings = config.load(cli, config_file=args.config)
    except ValueError as exc:
        print(f"sessiond: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings.db, args, out))
    except ApiError as exc:
        print(f"sessiond: {exc.message}", file=sys.stderr)
        return 1


async def _run(db: str, args: argparse.Namespace, out: TextIO) -> int:
    store = open_store(db)
    await store.open()
    try:
        return await ACTIONS[args.action](store, args, out)
    finally:
        await store.close()


async def create(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    made = await issue(store.keys, args.name, args.scope, args.tenant)
    out.write(f"{made.key}\n")
    sys.stderr.write(
        f"key {made.id} ({made.scope}, tenant {made.tenant}) made; it is shown this once and "
        "stored only as a hash\n"
    )
    return 0


async def list_keys(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    found: list[ApiKey] = []
    cursor: str | None = None
    while True:
        page = await store.keys.page(args.tenant, 1000, cursor)
        found += page.data
        cursor = page.next_cursor
        if cursor is None:
            break
    if args.json:
        for key in found:
            out.write(json.dumps(msgspec.to_builtins(key)) + "\n")
        return 0
    out.write(
        f"{'ID':<26}  {'NAME':<20}  {'TENANT':<16}  {'SCOPE':<5}  {'CREATED':<24}  "
        f"{'LAST USED':<24}  STATE\n"
    )
    for key in found:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        out.write(
            f"{key.id:<26}  {key.name[:20]:<20}  {key.tenant[:16]:<16}  {key.scope:<5}  "
            f"{key.created_at:<24}  {key.last_used_at or '-':<24}  {state}\n"
        )
    return 0


async def revoke(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    key = await store.keys.revoke(args.id, now(), None)
    out.write(f"key {key.id} revoked\n")
    return 0


ACTIONS = {"create": create, "list": list_keys, "revoke": revoke}
