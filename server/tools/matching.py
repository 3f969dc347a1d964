"""Matching the patterns a model chooses (grep's regex, glob's wildcards) in linear time.

Python's `re` backtracks and holds the interpreter lock while it does: "(a+)+$" against a
line of a few dozen characters runs for minutes, and no other request of the server is
answered meanwhile. RE2 never backtracks: a match costs at most the pattern's size times
the text's, whatever the pattern. The price is its syntax, which is Python's less
backreferences and lookaround (refused with a message saying how to do without), with
`\\z` for Python's `\\Z`, and with ASCII-only `\\d`, `\\w`, `\\s` and `\\b`.
"""

from __future__ import annotations

from typing import Any

import re2

from server.errors import ToolError

# A bad pattern is the model's mistake, reported to it; RE2 would also log it to stderr.
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

_HINTS = {
    "(?=": "lookahead (?=…) is not supported",
    "(?!": "negative lookahead (?!…) is not supported",
    "(?<": "lookbehind (?<=…) and (?<!…) are not supported",
    "\\Z": "write \\z for the end of the line, not \\Z",
    "escape sequence: \\": "backreferences (\\1) are not supported",
}
_SYNTAX = (
    "patterns use RE2 syntax, which is Python's without backreferences or lookaround; "
    "match the plain text instead, or check the lines found"
)


class Pattern:
    """A compiled RE2 pattern; texts are matched as UTF-8."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled

    def search(self, data: bytes) -> bool:
        return self._compiled.search(data) is not None

    def fullmatch(self, text: str) -> bool:
        return self._compiled.fullmatch(utf8(text)) is not None


def compile_regex(source: str) -> Pattern:
    """`source` as a grep pattern; ToolError saying what to change if RE2 cannot take it."""
    try:
        return Pattern(re2.compile(source, _OPTIONS))
    except UnicodeEncodeError as exc:
        raise ToolError(f"invalid regular expression {source!r}: it is not valid text") from exc
    except re2.error as exc:
        reason = _reason(exc)
        hint = next((hint for key, hint in _HINTS.items() if key in reason), None)
        advice = f"; {hint}: {_SYNTAX}" if hint else ""
        raise ToolError(f"invalid regular expression {source!r}: {reason}{advice}") from exc


def compile_translated(regex: str, pattern: str) -> Pattern:
    """A regex made from the glob `pattern`; ToolError naming the pattern if it is bad."""
    try:
        return Pattern(re2.compile(utf8(regex), _OPTIONS))
    except re2.error as exc:
        raise ToolError(f"invalid glob pattern {pattern!r}: {_reason(exc)}") from exc


def escape(char: str) -> str:
    """One character as an RE2 literal (a surrogate stays; utf8 turns it into U+FFFD)."""
    return char if ord(char) >= 128 else str(re2.escape(char))


def utf8(text: str) -> bytes:
    """`text` as UTF-8; a file name that is not UTF-8 (surrogate escapes from os.fsdecode)
    has each undecodable byte stand for one character U+FFFD, so `?` and `*` still match it."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace").encode("utf-8")


def _reason(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
