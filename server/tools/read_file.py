"""read_file: a text file's lines, numbered, in pages a model can ask for one after another."""

from __future__ import annotations

from typing import Annotated, BinaryIO

import msgspec
from msgspec import Meta

from server.errors import ToolError
from server.tools import paths, text, threads
from server.tools.base import ToolContext

DEFAULT_LIMIT = 2000


class ReadFileInput(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[
        str, Meta(min_length=1, description="File to read, relative to the working directory.")
    ]
    offset: Annotated[int, Meta(ge=1, description="First line to show, counting from 1.")] = 1
    limit: Annotated[int, Meta(ge=1, description="Maximum number of lines to show.")] = (
        DEFAULT_LIMIT
    )


class ReadFile:
    name = "read_file"
    description = (
        "Read a text file from the working directory. Each line is shown with its line "
        "number, a tab, then the line (like `cat -n`). Long files come in pages: `offset` is "
        "the first line to show (1-based) and `limit` the number of lines; when the output "
        "is cut short, a note at the end says which offset to read on from. Binary files "
        "are refused."
    )
    Input = ReadFileInput
    read_only = True

    async def run(self, input: ReadFileInput, ctx: ToolContext) -> str:
        real = paths.resolve(ctx, input.path)
        page = _Page(
            input.path,
            offset=input.offset,
            limit=input.limit,
            max_bytes=ctx.settings.read_max_bytes,
        )
        return await threads.run(page.read, real)


class _Page:
    """One page of a file: lines offset.. offset+limit-1, within max_bytes of output."""

    def __init__(self, path: str, *, offset: int, limit: int, max_bytes: int) -> None:
        self.path, self.offset, self.limit, self.max_bytes = path, offset, limit, max_bytes
        self.out: list[str] = []
        self.size = 0

    def read(self, real: str) -> str:
        try:
            with text.open_text(real, self.path) as file:
                seen, note = self._fill(file)
        except OSError as exc:
            raise paths.os_error(self.path, exc) from exc
        if not self.out:
            return self._nothing_shown(seen)
        return "\n".join([*self.out, note] if note else self.out)

    def _fill(self, file: BinaryIO) -> tuple[int, str | None]:
        """Collect the page's lines; (lines seen, note on why the page stopped early)."""
        number = 0
        for number, (raw, cut) in enumerate(text.lines(file, self.max_bytes), start=1):
            if number < self.offset:
                continue
            if number >= self.offset + self.limit:
                return number, f"[more lines follow; read on with offset={number}]"
            line = f"{number:6}\t{text.decode(raw)}"
            if self.out and self.size + len(line.encode()) + 1 > self.max_bytes:
                return number, (
                    f"[truncated: output reached the {self.max_bytes}-byte limit; "
                    f"read on with offset={number}]"
                )
            self.out.append(line)
            self.size += len(line.encode()) + 1
            if cut:
                return number, (
                    f"[truncated: line {number} is longer than {self.max_bytes} bytes and only "
                    f"its start is shown; read on with offset={number + 1}]"
                )
        return number, None

    def _nothing_shown(self, seen: int) -> str:
        if seen == 0:
            return f"{self.path!r} is empty"
        raise ToolError(
            f"offset {self.offset} is past the end of {self.path!r}, which has {seen} lines"
        )
