"""Imports point down only, so that each layer can be read and tested without the ones above:
each module may import from the groups listed for it."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"

# group → the groups its modules may import from (besides their own group)
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "events": {"base"},
    "store": {"base"},
    "formats": {"base"},
    "providers": {"base", "events"},
    "tools": {"base", "events"},
    "core": {"base", "events", "providers", "tools"},
    "runner": {"base", "events", "providers", "tools", "core", "store", "formats"},
    "api": {"base", "events", "runner", "store", "formats"},
    "top": {"base", "events", "providers", "tools", "core", "runner", "store", "formats", "api"},
}
GROUPS = {
    "ids": "base",
    "models": "base",
    "errors": "base",
    "events": "events",
    "store": "store",
    "transcript": "formats",
    "bundle": "formats",
    "providers": "providers",
    "tools": "tools",
    "session": "core",
    "loop": "core",
    "runner": "runner",
    "activerun": "runner",
    "admission": "runner",
    "runlog": "runner",
    "hub": "runner",
    "followers": "runner",
    "pauses": "runner",
    "ephemeral": "runner",
    "stops": "runner",
    "recovery": "runner",
    "restore": "runner",
    "agentspec": "runner",
    "histories": "runner",
    "api": "api",
    "app": "top",
    "cli": "top",
    "config": "top",
    "chat": "top",
    "sweeper": "top",
    "edge": "top",
    "connections": "top",
    "__main__": "top",
    "__init__": "top",
}
# Third-party packages that belong to one edge each.
EDGES = {
    "aiosqlite": {"store"},
    "starlette": {"api", "top"},
    "httpx": {"providers", "top"},
}


def group_of(parts: tuple[str, ...]) -> str:
    name = parts[1] if len(parts) > 1 else "__init__"
    return GROUPS.get(name.removesuffix(".py"), f"unclassified:{name}")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "server":
                found += [f"server.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return found


def test_imports_point_down_only() -> None:
    problems = []
    for path in sorted(SERVER.rglob("*.py")):
        rel = path.relative_to(SERVER.parent).with_suffix("").parts
        mine = group_of(rel)
        for name in imports(path):
            top = name.split(".")[0]
            if top in EDGES and mine not in EDGES[top]:
                problems.append(f"{'/'.join(rel)} imports {name} ({mine} may not)")
            if top != "server":
                continue
            theirs = group_of(tuple(name.split(".")))
            if mine.startswith("unclassified") or theirs.startswith("unclassified"):
                problems.append(f"{'/'.join(rel)} → {name}: classify {mine} / {theirs}")
            elif theirs != mine and theirs not in ALLOWED[mine]:
                problems.append(f"{'/'.join(rel)} ({mine}) imports {name} ({theirs})")
    assert problems == []
