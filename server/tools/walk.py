"""Walking a folder tree in sorted order without following symlinked folders.

Entries come out in pre-order with names sorted, so a listing reads like a tree and a search
can stop at its cap with the first results in order. Symlinked folders are shown but not
entered (that is how a walk stays inside the work_dir and out of loops); version-control
folders are shown but not entered either, since their contents are noise to a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

NOT_ENTERED = frozenset({".git", ".hg", ".svn"})


def walk(
    top: str, prefix: str, *, recursive: bool = True, max_depth: int | None = None
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(shown path, entry) for everything below `top`; shown paths start with `prefix`.

    An unreadable subfolder is skipped; an unreadable `top` raises OSError.
    """
    stack = [_scan(top, prefix, strict=True)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        shown, entry = item
        yield shown, entry
        if recursive and _enters(entry) and (max_depth is None or len(stack) < max_depth):
            stack.append(_scan(entry.path, shown + "/", strict=False))


def _scan(path: str, prefix: str, *, strict: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
    try:
        with os.scandir(path) as found:
            entries = sorted(found, key=lambda entry: entry.name)
    except OSError:
        if strict:
            raise
        entries = []
    return iter([(prefix + entry.name, entry) for entry in entries])


def _enters(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False) and entry.name not in NOT_ENTERED
    except OSError:
        return False
