"""Constructors are called with keywords once they take many arguments: six
values in a row say nothing of which is which, and a field added in the middle would
silently shift them."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parents[1] / "server"
MAX_POSITIONAL = 5


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: Any, func: ast.expr) -> Any:
    """What a call's callee names in the module's globals (None: not a plain dotted name)."""
    names: list[str] = []
    while isinstance(func, ast.Attribute):
        names.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    found = getattr(module, func.id, None)
    for name in reversed(names):
        found = getattr(found, name, None)
    return found


def long_constructor_calls() -> Iterator[str]:
    for path in sorted(SERVER.rglob("*.py")):
        if path.name == "__main__.py":  # importing it runs the command
            continue
        module = importlib.import_module(module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            positional = [arg for arg in node.args if not isinstance(arg, ast.Starred)]
            if len(positional) > MAX_POSITIONAL and isinstance(resolve(module, node.func), type):
                where = path.relative_to(SERVER.parent)
                yield f"{where}:{node.lineno}: {ast.unparse(node.func)}({len(positional)} args)"


def test_no_constructor_takes_more_than_five_positional_arguments() -> None:
    assert list(long_constructor_calls()) == []


def test_the_check_sees_a_constructor_call() -> None:
    module = importlib.import_module("server.tools")
    call = ast.parse("tools.ToolOutcome('x', True)", mode="eval").body
    assert isinstance(call, ast.Call)
    assert resolve(module, ast.Name("ToolOutcome")) is module.ToolOutcome
    assert resolve(module, call.func) is None  # `tools` is no name in server.tools itself
