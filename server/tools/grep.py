"""grep: search the text files of the work_dir for a regular expression.

The pattern is matched with RE2 (see matching.py), so that no pattern takes more than
linear time. One that RE2 cannot take (a backreference, lookaround) is refused with a
message saying so, rather than run with Python's `re` in a process of its own that a
timeout could kill: a model can nearly always say the same without them, or check the
lines it finds, and where it needs them, run_command's `grep -P` has a timeout and a
process to kill already. Starting a process per search, from a server with threads, would
cost more than it saves.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from server.errors import ToolError
from server.tools import files, paths, text, threads
from server.tools.base import ToolContext
from server.tools.glob import compile_name
from server.tools.matching import Pattern, compile_regex
from server.tools.walk import walk

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_LINE_CHARS = 300


class GrepInput(msgspec.Struct, forbid_unknown_fields=True):
    pattern: Annotated[
        str,
        Meta(min_length=1, description="Regular expression (RE2 syntax) to look for in each line."),
    ]
    path: Annotated[
        str,
        Meta(
            min_length=1,
            description="Folder or file to search, relative to the working directory.",
        ),
    ] = "."
    # UNSET: the field may be left out, but not sent as null.
    glob: (
        UnsetType
        | Annotated[
            str,
            Meta(
                min_length=1,
                description="Only search files whose name matches this pattern, e.g. '*.py'.",
            ),
        ]
    ) = UNSET


class Grep:
    name = "grep"
    description = (
        "Search text files in the working directory for a regular expression, line by line "
        "(RE2 syntax: Python's without backreferences or lookaround; use (?i) for "
        "case-insensitive). Replies with 'path:line: text' for each "
        "matching line, sorted by path. `path` is a folder to search below or a single "
        "file; `glob` keeps only files whose name matches (e.g. '*.py'). Binary files, "
        "files over 2 MB, .git, symlinks, FIFOs, devices and hard-linked files are skipped."
    )
    Input = GrepInput
    read_only = True

    async def run(self, input: GrepInput, ctx: ToolContext) -> str:
        regex = compile_regex(input.pattern)
        wanted = None if input.glob is UNSET else compile_name(input.glob)
        path = input.path
        real = paths.resolve(ctx, path)
        search = _Search(regex, wanted, ctx.settings.grep_max_matches)
        await threads.run(search.run, real, path)
        return search.reply(input.pattern, path)


class _Search:
    def __init__(self, regex: Pattern, wanted: Pattern | None, cap: int) -> None:
        self.regex, self.wanted, self.cap = regex, wanted, cap
        self.matches: list[str] = []
        self.skipped = 0
        self.refused = 0  # not regular files, or with more than one link (see files.py)
        self.capped = False

    def run(self, real: str, path: str) -> None:
        try:
            if not stat.S_ISDIR(os.stat(real).st_mode):
                # One file asked for by name: a refusal is the answer, not a skipped file.
                self._search_file(real, paths.shown(path), path)
                return
            for shown, file in self._files(real, path):
                try:
                    self._search_file(file, shown, shown)
                except ToolError:
                    self.refused += 1
                if self.capped:
                    return
        except OSError as exc:
            raise paths.os_error(path, exc) from exc

    def reply(self, pattern: str, path: str) -> str:
        lines = self.matches or [f"no matches for {pattern!r} in {path!r}"]
        if self.capped:
            lines.append(f"[stopped after {self.cap} matches; narrow the pattern, path or glob]")
        if self.skipped:
            lines.append(f"[skipped {self.skipped} binary, large or unreadable files]")
        if self.refused:
            lines.append(f"[skipped {self.refused} special or hard-linked files]")
        return "\n".join(lines)

    def _files(self, real: str, path: str) -> Iterator[tuple[str, str]]:
        """(shown path, real path) of each file to search below the folder `real`."""
        prefix = paths.shown(path)
        for shown, entry in walk(real, prefix + "/" if prefix else ""):
            if entry.is_file(follow_symlinks=False) and self._wanted(entry.name):
                yield shown, entry.path

    def _wanted(self, name: str) -> bool:
        return self.wanted is None or self.wanted.fullmatch(name)

    def _search_file(self, real: str, shown: str, path: str) -> None:
        data = _read_text(real, path)
        if data is None:
            self.skipped += 1
            return
        for number, line in enumerate(data.removesuffix(b"\n").split(b"\n"), start=1):
            line = line.removesuffix(b"\r")
            if self.regex.search(line):
                if len(self.matches) == self.cap:
                    self.capped = True
                    return
                self.matches.append(f"{paths.listed(shown)}:{number}: {_clip(text.decode(line))}")


def _read_text(real: str, path: str) -> bytes | None:
    """The file's text as UTF-8, or None for a file that is binary, too large or unreadable;
    ToolError for one that is no regular file or has more than one link (files.py)."""
    try:
        with os.fdopen(files.open_regular(real, path, os.O_RDONLY), "rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_FILE_BYTES:
                return None
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES or text.is_binary(data[: text.SNIFF_BYTES]):
        return None
    # Decoded and encoded again, so that the regex sees valid UTF-8 whatever the file holds.
    return text.decode(data).encode("utf-8")


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " […]"
