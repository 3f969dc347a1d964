"""grep: search the text files of the work_dir for a regular expression."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from collections.abc import Iterator
from typing import Any

from server.errors import ToolError
from server.tools import paths, text
from server.tools.base import ToolContext
from server.tools.walk import walk

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_LINE_CHARS = 300


class Grep:
    name = "grep"
    description = (
        "Search text files in the working directory for a Python regular expression, line "
        "by line (use (?i) for case-insensitive). Replies with 'path:line: text' for each "
        "matching line, sorted by path. `path` is a folder to search below or a single "
        "file; `glob` keeps only files whose name matches (e.g. '*.py'). Binary files, "
        "files over 2 MB, .git and symlinks are skipped."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {
                "type": "string",
                "description": "Python regular expression to look for in each line.",
                "minLength": 1,
            },
            "path": {
                "type": "string",
                "description": "Folder or file to search, relative to the working directory.",
                "default": ".",
                "minLength": 1,
            },
            "glob": {
                "type": "string",
                "description": "Only search files whose name matches this pattern, e.g. '*.py'.",
                "minLength": 1,
            },
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }
    read_only = True

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> str:
        regex = _compile(input["pattern"])
        path: str = input.get("path", ".")
        real = paths.resolve(ctx, path)
        search = _Search(regex, input.get("glob"), ctx.settings.grep_max_matches)
        await asyncio.to_thread(search.run, real, path)
        return search.reply(input["pattern"], path)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from exc


class _Search:
    def __init__(self, regex: re.Pattern[str], name_glob: str | None, cap: int) -> None:
        self.regex, self.name_glob, self.cap = regex, name_glob, cap
        self.matches: list[str] = []
        self.skipped = 0
        self.capped = False

    def run(self, real: str, path: str) -> None:
        try:
            for shown, file in self._files(real, path):
                self._search_file(file, shown)
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
        return "\n".join(lines)

    def _files(self, real: str, path: str) -> Iterator[tuple[str, str]]:
        """(shown path, real path) of each regular file to search."""
        if os.path.isfile(real):
            yield paths.shown(path), real
            return
        prefix = paths.shown(path)
        for shown, entry in walk(real, prefix + "/" if prefix else ""):
            if entry.is_file(follow_symlinks=False) and self._wanted(entry.name):
                yield shown, entry.path

    def _wanted(self, name: str) -> bool:
        return self.name_glob is None or fnmatch.fnmatchcase(name, self.name_glob)

    def _search_file(self, real: str, shown: str) -> None:
        data = _read_text(real)
        if data is None:
            self.skipped += 1
            return
        for number, line in enumerate(data.removesuffix("\n").split("\n"), start=1):
            line = line.removesuffix("\r")
            if self.regex.search(line):
                if len(self.matches) == self.cap:
                    self.capped = True
                    return
                self.matches.append(f"{shown}:{number}: {_clip(line)}")


def _read_text(real: str) -> str | None:
    """The file's text, or None for a file that is binary, too large or unreadable."""
    try:
        with open(real, "rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_FILE_BYTES:
                return None
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES or text.is_binary(data[: text.SNIFF_BYTES]):
        return None
    return text.decode(data)


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " […]"
