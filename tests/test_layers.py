"""The architecture as ARCHITECTURE.md draws it, checked against the code: its table of parts
is the one source of which module belongs where, which parts each may import, and which
third-party libraries only some parts may touch. A new module outside every part, an import
that points the wrong way, a library used outside its edge, a private name reached from another
module, or an import hidden under TYPE_CHECKING each fail here with the file and the name."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "server"
TABLE = re.compile(r"<!-- parts -->\n(.*?)\n<!-- /parts -->", re.S)


@dataclass
class Part:
    name: str
    modules: set[str]  # "loop" for server/loop.py, "runs/" for the package server/runs
    may_import: set[str]
    libraries: set[str]


def read_parts() -> dict[str, Part]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    found = TABLE.search(text)
    assert found, "ARCHITECTURE.md has no table between <!-- parts --> and <!-- /parts -->"
    parts: dict[str, Part] = {}
    for line in found.group(1).splitlines()[2:]:  # after the header and its rule
        name, modules, may, libraries = (cell.strip() for cell in line.strip("|").split("|"))
        parts[name] = Part(name, set(_ticked(modules)), _listed(may), set(_ticked(libraries)))
    everything = set(parts)
    for part in parts.values():
        if part.may_import == {"every part"}:
            part.may_import = everything - {part.name}
        unknown = part.may_import - everything
        assert not unknown, f"part {part.name} may import unknown parts {unknown}"
    return parts


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _listed(cell: str) -> set[str]:
    return {word.strip() for word in cell.split(",") if word.strip() not in ("", "—")}


PARTS = read_parts()
OWNER = {module: part.name for part in PARTS.values() for module in part.modules}
EDGE_LIBRARIES = {lib for part in PARTS.values() for lib in part.libraries}


def part_of(dotted: str) -> str | None:
    """The part of `server.x.y` (a module, or a name imported from one): the longest listed
    prefix, so that a module of a package (`client/local`) may belong to a part of its own."""
    names = dotted.split(".")[1:]
    if not names:
        return OWNER.get("__init__")
    for depth in range(len(names), 0, -1):
        prefix = "/".join(names[:depth])
        found = OWNER.get(prefix + "/") or OWNER.get(prefix)
        if found is not None:
            return found
    return None


def server_files() -> list[Path]:
    return sorted(SERVER.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(tree: ast.AST) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "server":
                found += [(f"server.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((node.module, node.lineno))
    return found


def test_every_module_belongs_to_one_part() -> None:
    listed = [m for part in PARTS.values() for m in part.modules]
    assert len(listed) == len(set(listed)), "a module is listed in two parts"
    loose = [module_name(p) for p in server_files() if part_of(module_name(p)) is None]
    assert loose == [], "add these to a part in ARCHITECTURE.md's table"
    for module in OWNER:
        path = SERVER / module if module.endswith("/") else SERVER / f"{module}.py"
        assert path.exists(), f"ARCHITECTURE.md lists {module}, which does not exist"


def import_problems(source: str, mine: str, where: str) -> list[str]:
    problems = []
    for name, line in imported(ast.parse(source)):
        at = f"{where}:{line} ({mine})"
        top = name.split(".")[0]
        if top in EDGE_LIBRARIES and top not in PARTS[mine].libraries:
            problems.append(f"{at} imports {name}: only {_users(top)} may")
        theirs = part_of(name) if top == "server" else None
        if theirs is not None and theirs != mine and theirs not in PARTS[mine].may_import:
            problems.append(f"{at} imports {name} ({theirs})")
    return problems


def test_imports_point_the_way_the_table_allows() -> None:
    problems = []
    for path in server_files():
        mine = part_of(module_name(path))
        assert mine is not None
        problems += import_problems(path.read_text(), mine, str(path.relative_to(ROOT)))
    assert problems == []


def test_a_forbidden_import_is_caught() -> None:
    """The check is only as good as its reading of the table: a store module that imported
    the runs part, or starlette, must be reported."""
    source = (
        "from server.runs.runner import Runner\nimport starlette\nfrom server.models import Run\n"
    )
    found = import_problems(source, "store", "server/store/x.py")
    assert len(found) == 2
    assert "server.runs.runner (runs)" in found[0]
    assert "imports starlette: only" in found[1]


def _users(library: str) -> str:
    return ", ".join(sorted(p.name for p in PARTS.values() if library in p.libraries))


def test_no_module_reaches_another_modules_private_names() -> None:
    """`from x import _name`, `module._name` and `self.other._name` all reach into another
    module's or object's insides; `self._name` is one's own. A library's documented knobs
    that happen to start with an underscore (`os._exit`, `logging._srcfile`) are the
    library's business, not ours."""
    problems = []
    for path in server_files():
        tree = ast.parse(path.read_text())
        libraries = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if not alias.name.startswith("server")
        }
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("server"):
                problems += [f"{where} imports {a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls", *libraries):
                    continue
                problems.append(f"{where} reaches {ast.unparse(node)}")
    assert problems == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_import_is_hidden_under_type_checking() -> None:
    """An import only type checkers see hides a cycle the table forbids."""
    hidden = []
    for path in server_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                hidden += [f"{path.relative_to(ROOT)}:{node.lineno}"]
    assert hidden == []


def module_imports(path: Path) -> set[str]:
    """The sessiond modules a file imports: `from server.x import y` names the module x.y
    when there is one, else x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("server")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("server"):
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                found.add(inner if _module_path(inner) is not None else str(node.module))
    return found


def _module_path(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_no_import_cycle() -> None:
    graph = {module_name(p).removesuffix(".__init__"): module_imports(p) for p in server_files()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" → ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported_module in sorted(graph.get(module, ())):
            visit(imported_module, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
