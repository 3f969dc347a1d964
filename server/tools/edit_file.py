"""edit_file: replace one exact, unique piece of text in a file."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from server.errors import ToolError
from server.tools import paths, text, threads
from server.tools.base import ToolContext


class EditFileInput(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[
        str, Meta(min_length=1, description="File to edit, relative to the working directory.")
    ]
    old: Annotated[
        str, Meta(min_length=1, description="The exact text to replace; must occur exactly once.")
    ]
    new: Annotated[str, Meta(description="The text to put in its place.")]


class EditFile:
    name = "edit_file"
    description = (
        "Replace one piece of text in a text file of the working directory. `old` must "
        "match exactly once, including whitespace and indentation; if it matches more than "
        "once, include more surrounding lines to make it unique. Read the file first."
    )
    Input = EditFileInput
    read_only = False

    async def run(self, input: EditFileInput, ctx: ToolContext) -> str:
        path, old, new = input.path, input.old, input.new
        if old == new:
            raise ToolError("old and new are the same text; there is nothing to change")
        real = paths.resolve(ctx, path)
        return await threads.run(_edit, real, path, old, new)


def _edit(real: str, path: str, old: str, new: str) -> str:
    try:
        # One descriptor for reading and writing: the file written is the one checked and read.
        with text.open_text(real, path, writable=True) as file:
            content = _decode(file.read(), path)
            at = _unique_match(content, old, path)
            file.seek(0)
            file.truncate()
            file.write((content[:at] + new + content[at + len(old) :]).encode("utf-8"))
    except OSError as exc:
        raise paths.os_error(path, exc) from exc
    line = content.count("\n", 0, at) + 1
    return f"edited {path!r} at line {line}"


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolError(f"{path!r} is not UTF-8 text; edit_file only edits UTF-8 files") from exc


def _unique_match(content: str, old: str, path: str) -> int:
    """Where `old` occurs in `content`; ToolError unless it occurs exactly once."""
    at = content.find(old)
    if at < 0:
        raise ToolError(
            f"old text not found in {path!r}; read the file and copy the text exactly, "
            "including whitespace"
        )
    count = _count_overlapping(content, old, at)
    if count > 1:
        raise ToolError(f"old text matches {count} times in {path!r}; give more context")
    return at


def _count_overlapping(content: str, old: str, first: int) -> int:
    count, at = 1, content.find(old, first + 1)
    while at >= 0:
        count, at = count + 1, content.find(old, at + 1)
    return count
