"""The `sessiond` command: `sessiond serve` runs the server; `sessiond chat` and `sessiond
sessions …` talk to a running one over HTTP; `keys`, `config show`, `backup` and `doctor`
work on the settings and the database directly."""

from __future__ import annotations

from collections.abc import Sequence

from server.cli import chat
from server.cli.commands import build_parser
from server.cli.keys import keys
from server.cli.ops import backup_command, config_show, copy_command, doctor, migrate_command
from server.cli.serve import serve
from server.cli.sessions import sessions


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "chat":
        return chat.main(args.url, args.session, args.agent, args.work_dir)
    if args.command == "sessions":
        return sessions(args)
    if args.command == "keys":
        return keys(args)
    if args.command == "config":
        return config_show(args)
    if args.command == "backup":
        return backup_command(args)
    if args.command == "doctor":
        return doctor(args)
    if args.command == "migrate":
        return migrate_command(args)
    if args.command == "copy":
        return copy_command(args)
    return 2
