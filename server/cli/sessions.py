"""`sessiond sessions …`: list, show, delete, export and import sessions of a running
server, over its HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from server.cli.remote import Client, ClientError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


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
