"""glob: find files by name pattern, e.g. "**/*.py".

Matching is done here rather than with pathlib: pathlib follows a symlinked folder named in
the pattern ("link/**"), which could walk the whole disk; this walks only the work_dir's own
tree (see walk.py) and matches each path against the pattern, turned into an RE2 regex so
that no pattern costs more than linear time (see matching.py).
"""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from server.errors import ToolError
from server.tools import paths, threads
from server.tools.base import ToolContext
from server.tools.matching import Pattern, compile_translated, escape
from server.tools.walk import walk

_MAGIC = re.compile(r"[*?\[]")
_NAMED = 5  # symlinks named in the note on those skipped


class GlobInput(msgspec.Struct, forbid_unknown_fields=True):
    pattern: Annotated[
        str, Meta(min_length=1, description="Glob pattern relative to the working directory.")
    ]


class Glob:
    name = "glob"
    description = (
        "Find files and folders in the working directory whose path matches a glob pattern. "
        "`*` matches within one name, `?` one character, `[abc]` one of a set, and `**` any "
        "number of folders: '**/*.py' finds Python files at any depth, 'src/*.ts' only "
        "directly in src. Results are relative to the working directory, sorted, folders end "
        "with '/'; .git and symlinked folders are not searched."
    )
    Input = GlobInput
    read_only = True

    async def run(self, input: GlobInput, ctx: ToolContext) -> str:
        pattern = input.pattern
        paths.check_text(pattern)
        parts = [part for part in pattern.split("/") if part not in ("", ".")]
        if not parts:
            raise ToolError(f"pattern {pattern!r} matches nothing but the working directory")
        fixed = _fixed_prefix(parts)
        real = paths.resolve(ctx, "/".join(fixed) or ".")
        cap = ctx.settings.list_max_entries
        found = await threads.run(_search, real, parts, len(fixed), cap)
        if not found.lines and not found.unfollowed:
            return f"no files match {pattern!r}"
        lines = found.lines or [f"no files match {pattern!r}"]
        if len(lines) > cap:
            lines[cap:] = [f"[truncated: showing the first {cap} matches; narrow the pattern]"]
        if found.unfollowed:
            lines.append(_unfollowed_note(found.unfollowed))
        return "\n".join(lines)


class _Found(NamedTuple):
    lines: list[str]
    unfollowed: list[str]  # matching symlinks that loop or cannot be followed


def _search(real: str, parts: list[str], fixed: int, cap: int) -> _Found:
    """Up to cap + 1 matches below `real`, which is where the first `fixed` parts lead."""
    regex = compile_pattern(parts)
    prefix = "".join(part + "/" for part in parts[:fixed])
    depth = None if "**" in parts else len(parts) - fixed
    found = _Found([], [])
    try:
        for shown, entry in walk(real, prefix, max_depth=depth):
            if not regex.fullmatch(shown):
                continue
            try:
                mark = "/" if entry.is_dir() else ""
            except OSError:
                # A symlink to itself (ELOOP) is one bad name, not a reason to fail the search.
                found.unfollowed.append(shown)
                continue
            found.lines.append(paths.listed(shown + mark))
            if len(found.lines) > cap:
                break
    except (FileNotFoundError, NotADirectoryError):
        return _Found([], [])
    except OSError as exc:
        raise paths.os_error(prefix or ".", exc) from exc
    return found


def _unfollowed_note(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_NAMED]) + (
        ", …" if len(names) > _NAMED else ""
    )
    links = "symbolic link" if len(names) == 1 else "symbolic links"
    return f"[skipped {len(names)} {links} that cannot be followed (a loop, or no access): {shown}]"


def compile_pattern(parts: list[str]) -> Pattern:
    """A matcher for whole relative paths, where only `**` crosses a '/'."""
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _translate(part) + ("" if last else "/")
    return compile_translated("(?s)" + regex, "/".join(parts))


def compile_name(pattern: str) -> Pattern:
    """A matcher for one file name (no '/' in it), as fnmatch would match it."""
    return compile_translated("(?s)" + _translate(pattern), pattern)


def _fixed_prefix(parts: list[str]) -> list[str]:
    """The leading names with no wildcard: the folder the search can start in."""
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return fixed


def _translate(part: str) -> str:
    """One name's wildcards as RE2 syntax."""
    out, index = "", 0
    while index < len(part):
        char = part[index]
        index += 1
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := part.find("]", index + 1)) > 0:
            out += _char_class(part[index:end])
            index = end + 1
        else:
            out += escape(char)
    return out


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    body = body[1:] if negate else body
    escaped = re.sub(r"([\\^\[&~|])", r"\\\1", body)
    return f"[^/{escaped}]" if negate else f"[{escaped}]"
