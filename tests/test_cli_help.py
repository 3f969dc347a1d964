"""`sessiond serve --help` shows each setting's default and env variable as Settings has them."""

from __future__ import annotations

import argparse

import msgspec

from server.cli.commands import build_parser
from server.config import Settings

MIB = 1024 * 1024


def serve_actions() -> list[argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices["serve"]._actions if a.dest in Settings.__struct_fields__]


def test_every_setting_flag_names_its_env_variable() -> None:
    actions = serve_actions()
    assert len(actions) >= 20
    for action in actions:
        assert f"; env SESSIOND_{action.dest.upper()})" in (action.help or ""), action.dest


def test_every_plain_default_shown_is_the_settings_default() -> None:
    defaults = {field.name: field.default for field in msgspec.structs.fields(Settings)}
    for action in serve_actions():
        value, shown = defaults[action.dest], action.help or ""
        if isinstance(value, bool):
            assert ("(default on;" if value else "(default: off") in shown, action.dest
        elif isinstance(value, int) and action.dest.endswith("_bytes"):
            assert f"(default {value // MIB} MiB;" in shown, action.dest
        elif isinstance(value, int | float):
            assert f"(default {value:g};" in shown, action.dest
        elif isinstance(value, str):
            assert f"(default {value};" in shown, action.dest
