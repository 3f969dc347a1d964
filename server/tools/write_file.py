"""write_file: create or replace a file in the work_dir."""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
from msgspec import Meta

from server.tools import files, paths, threads
from server.tools.base import ToolContext


class WriteFileInput(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[
        str, Meta(min_length=1, description="File to write, relative to the working directory.")
    ]
    content: Annotated[str, Meta(description="The file's complete new content.")]


class WriteFile:
    name = "write_file"
    description = (
        "Write a text file in the working directory, replacing it if it exists. Missing "
        "parent folders are created. Give the complete content; to change part of an "
        "existing file, edit_file is safer."
    )
    Input = WriteFileInput
    read_only = False

    async def run(self, input: WriteFileInput, ctx: ToolContext) -> str:
        path = input.path
        real = paths.resolve(ctx, path)
        data = input.content.encode("utf-8")
        existed = await threads.run(_write, real, path, data)
        what = "replaced its previous content" if existed else "new file"
        return f"wrote {len(data)} bytes to {path!r} ({what})"


def _write(real: str, path: str, data: bytes) -> bool:
    """Write `data`; whether the file existed before."""
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        fd, existed = files.open_for_write(real, path)
        with os.fdopen(fd, "wb") as file:
            file.truncate(0)  # only now that the file is known to be one to replace
            file.write(data)
    except OSError as exc:
        raise paths.os_error(path, exc) from exc
    return existed
