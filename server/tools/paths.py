"""Confinement: every path a tool touches resolves inside the session's work_dir.

A path is checked twice: as text (no absolute path, no "..", no NUL, sane lengths), then by
where it really leads once symlinks are resolved. The second check is what stops a symlink
to "/" or a symlinked folder pointing elsewhere. It is a check before use, not a sandbox: a
symlink swapped between the check and the open is not caught, which only matters when
something else (run_command) can write to the work_dir at the same time.
"""

from __future__ import annotations

import os

from server.errors import ToolError
from server.tools.base import ToolContext

MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255


def work_root(ctx: ToolContext) -> str:
    """The real path of the session's work_dir, which must be an existing folder."""
    if ctx.work_dir is None:
        raise ToolError("this session has no work_dir; set one with PUT /sessions/{id}")
    root = os.path.realpath(ctx.work_dir)
    if not os.path.isdir(root):
        raise ToolError(f"the session's work_dir {ctx.work_dir!r} is not an existing folder")
    return root


def resolve(ctx: ToolContext, path: str) -> str:
    """The real path that `path` (relative to work_dir) leads to; ToolError if it leaves."""
    check_text(path)
    root = work_root(ctx)
    real = _realpath(os.path.join(root, path), path)
    if not is_inside(root, real):
        raise ToolError(f"{_outside(path)} (a symbolic link leads out of it)")
    return real


def check_text(path: str) -> None:
    """Refuse a path (or glob pattern) that reaches outside before touching the disk."""
    if "\0" in path:
        raise ToolError(f"path {path!r} contains a NUL byte")
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(
            f"path {path[:60]!r}… is too long ({len(path)} characters; at most {MAX_PATH_CHARS})"
        )
    if os.path.isabs(path):
        raise ToolError(f"{_outside(path)}; give a path relative to it, not an absolute one")
    parts = path.split("/")
    if ".." in parts:
        raise ToolError(f"{_outside(path)}; '..' is not allowed")
    for part in parts:
        if len(_fs_bytes(part, path)) > MAX_NAME_BYTES:
            raise ToolError(
                f"path {path[:60]!r}… has a name longer than {MAX_NAME_BYTES} bytes: {part[:40]!r}…"
            )


def _fs_bytes(part: str, path: str) -> bytes:
    try:
        return os.fsencode(part)
    except UnicodeEncodeError as exc:
        raise ToolError(f"path {path!r} has characters no file name can have") from exc


def is_inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def shown(path: str) -> str:
    """`path` as tools print it: normalised, relative to work_dir, "" for the work_dir itself."""
    norm = os.path.normpath(path)
    return "" if norm == "." else norm


def listed(shown: str) -> str:
    """`shown` as one line of a listing: quoted (as Python would) when it holds a line break
    or another control character, or starts with a quote, so that no file name can pass for
    more lines, or for a quoted one. A name that is not UTF-8 stays as it is (see _encodable
    in __init__.py)."""
    plain = shown.isprintable() or all(ch.isprintable() or _escaped(ch) for ch in shown)
    return shown if plain and shown[:1] not in ("'", '"') else repr(shown)


def _escaped(char: str) -> bool:
    """A byte that os.fsdecode could not decode, kept as a lone surrogate."""
    return "\udc80" <= char <= "\udcff"


def os_error(path: str, exc: OSError) -> ToolError:
    """An OSError told in words a model can act on, naming the path it was given."""
    match exc:
        case FileNotFoundError():
            return ToolError(f"no such file or folder: {path!r}")
        case IsADirectoryError():
            return ToolError(f"{path!r} is a folder, not a file; use list_files to see inside it")
        case NotADirectoryError():
            return ToolError(f"{path!r}: a part of this path is a file, not a folder")
        case PermissionError():
            return ToolError(f"permission denied: {path!r}")
        case _:
            return ToolError(f"{path!r}: {exc.strerror or exc}")


def _realpath(full: str, path: str) -> str:
    try:
        return os.path.realpath(full, strict=True)
    except (FileNotFoundError, NotADirectoryError):
        # Not there (yet): resolve the part that exists, so a file to be written through a
        # symlinked folder is still checked against where it would land.
        return os.path.realpath(full)
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ToolError(f"path {path!r} cannot be resolved: {reason}") from exc


def _outside(path: str) -> str:
    return f"path {path!r} is outside the session's work_dir"
