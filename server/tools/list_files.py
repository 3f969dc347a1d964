"""list_files: what is in a folder of the work_dir."""

from __future__ import annotations

import os
from itertools import islice
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from server.errors import ToolError
from server.tools import paths, threads
from server.tools.base import ToolContext
from server.tools.walk import walk

DEFAULT_LIMIT = 200


class ListFilesInput(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[
        str, Meta(min_length=1, description="Folder to list, relative to the working directory.")
    ] = "."
    recursive: Annotated[bool, Meta(description="Also list everything in subfolders.")] = False
    limit: Annotated[int, Meta(ge=1, description="Maximum number of entries to return.")] = (
        DEFAULT_LIMIT
    )


class ListFiles:
    name = "list_files"
    description = (
        "List the files and folders in a folder of the working directory, sorted by name. "
        "Paths are relative to the working directory; folders end with '/'. With "
        "recursive=true, everything below is listed as a tree (symlinked folders and .git "
        "are shown but not entered). At most `limit` entries are returned, with a note when "
        "there are more."
    )
    Input = ListFilesInput
    read_only = True

    async def run(self, input: ListFilesInput, ctx: ToolContext) -> str:
        path = input.path
        limit = min(input.limit, ctx.settings.list_max_entries)
        real = paths.resolve(ctx, path)
        listing = await threads.run(_list, real, path, input.recursive, limit)
        if listing.truncated:
            listing.lines.append(
                f"[truncated: showing the first {limit} entries; there are more. List a "
                f"subfolder, or raise limit (at most {ctx.settings.list_max_entries})]"
            )
        return "\n".join(listing.lines)


class _Listing(NamedTuple):
    lines: list[str]
    truncated: bool


def _list(real: str, path: str, recursive: bool, limit: int) -> _Listing:
    if os.path.isfile(real):
        raise ToolError(f"{path!r} is a file, not a folder; use read_file to read it")
    prefix = paths.shown(path)
    entries = walk(real, prefix + "/" if prefix else "", recursive=recursive)
    try:
        found = list(islice(entries, limit + 1))
    except OSError as exc:
        raise paths.os_error(path, exc) from exc
    if not found:
        return _Listing([f"{path!r} is an empty folder"], truncated=False)
    lines = [
        paths.listed(shown + ("/" if _is_dir(entry) else "")) for shown, entry in found[:limit]
    ]
    return _Listing(lines, truncated=len(found) > limit)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
