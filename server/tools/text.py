"""Telling text files from binary ones, and reading them line by line with bounded memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from server.errors import ToolError
from server.tools import files

SNIFF_BYTES = 8192


def is_binary(head: bytes) -> bool:
    """A NUL byte near the start is what git and grep take to mean binary; so do we."""
    return b"\0" in head


def open_text(real: str, path: str, *, writable: bool = False) -> BinaryIO:
    """Open a regular text file for reading (and writing); ToolError for devices, FIFOs,
    hard links and binaries (see files.py)."""
    fd = files.open_regular(real, path, os.O_RDWR if writable else os.O_RDONLY)
    file = os.fdopen(fd, "r+b" if writable else "rb")
    if is_binary(file.read(SNIFF_BYTES)):
        file.close()
        raise ToolError(f"{path!r} is a binary file; only text files can be read or edited")
    file.seek(0)
    return file


def lines(file: BinaryIO, max_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Each line without its line ending, and whether it was cut at `max_bytes`.

    Lines are split on "\\n" only, so line numbers agree with grep and editors. A line longer
    than `max_bytes` is yielded cut short and the rest is skipped, never held in memory.
    """
    while raw := file.readline(max_bytes):
        cut = not raw.endswith(b"\n") and len(raw) == max_bytes
        if cut:
            _skip_rest_of_line(file, max_bytes)
        yield raw.removesuffix(b"\n").removesuffix(b"\r"), cut


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _skip_rest_of_line(file: BinaryIO, chunk: int) -> None:
    while rest := file.readline(chunk):
        if rest.endswith(b"\n"):
            return
