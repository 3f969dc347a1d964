"""Patterns a model chooses cannot freeze the server: grep and glob match in linear time.

Python's `re` backtracks while it holds the interpreter lock, so one grep for "(a+)+$" kept
every request of the server waiting for as long as it ran. The unit tests below run such
patterns on inputs where backtracking would take years, each in a child process: a regex
stuck in C holds the lock, so nothing in the test's own process could end it, while a child
is killed at CHILD_TIMEOUT_S (a generous bound: the child needs well under a second).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import tools
from server.tools.base import ToolContext
from tests.conftest import scripted_agent
from tests.live import ThreadServer

# What /healthz may take while hostile patterns are matched: generous for a loaded 2-core
# box, far below what backtracking takes on these inputs (about 15 s here, more when loaded).
HEALTH_BOUND_S = 5.0
CHILD_TIMEOUT_S = 60.0
CHILD = """
import asyncio, json, sys
from server import tools
from server.tools.base import ToolContext
name, input, work_dir = json.loads(sys.argv[1])
outcome = asyncio.run(tools.call(name, input, ToolContext(work_dir, "s1", "r1")))
print(json.dumps([outcome.content, outcome.is_error]))
"""


def call(name: str, input: dict[str, Any], work_dir: Any) -> tools.ToolOutcome:
    return asyncio.run(tools.call(name, input, ToolContext(str(work_dir), "s1", "r1")))


def call_in_child(name: str, input: dict[str, Any], work_dir: Any) -> tools.ToolOutcome:
    """The tool call made in a child process, which is killed if it does not finish."""
    argument = json.dumps([name, input, str(work_dir)])
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, argument],
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} {input} was still matching after {CHILD_TIMEOUT_S:g} s")
    content, is_error = json.loads(done.stdout)
    return tools.ToolOutcome(content, is_error)


# unit level: the tools themselves, on inputs where backtracking never ends


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|a)*b", "(a*)*b", "(.*a){12}!x", "(a|aa)+$"])
def test_grep_is_linear_on_catastrophic_patterns(tmp_path: Path, pattern: str) -> None:
    (tmp_path / "hostile.txt").write_text("a" * 5000 + "!\n")
    outcome = call_in_child("grep", {"pattern": pattern}, tmp_path)
    assert outcome == tools.ToolOutcome(f"no matches for {pattern!r} in '.'", False)


def test_glob_is_linear_on_many_stars(tmp_path: Path) -> None:
    (tmp_path / ("a" * 250)).write_text("x\n")
    pattern = "*a" * 40 + "*b"
    outcome = call_in_child("glob", {"pattern": pattern}, tmp_path)
    assert outcome == tools.ToolOutcome(f"no files match {pattern!r}", False)
    assert call_in_child("glob", {"pattern": "*a" * 40 + "*"}, tmp_path).content == "a" * 250


def test_glob_is_linear_on_many_globstars(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d"] * 40)
    deep.mkdir(parents=True)
    (deep / "y").write_text("x\n")
    pattern = "**/" * 12 + "x"
    assert (
        call_in_child("glob", {"pattern": pattern}, tmp_path).content
        == f"no files match {pattern!r}"
    )
    found = call_in_child("glob", {"pattern": "**/d/" * 12 + "y"}, tmp_path).content
    assert found == "/".join(["d"] * 40 + ["y"])


def test_grep_name_glob_is_linear_too(tmp_path: Path) -> None:
    """fnmatch, which this glob replaced, was linear already: this keeps it so."""
    (tmp_path / ("a" * 250)).write_text("needle\n")
    (tmp_path / "b.txt").write_text("needle\n")
    name_glob = "*a" * 40 + "*b"
    outcome = call_in_child("grep", {"pattern": "needle", "glob": name_glob}, tmp_path)
    assert outcome == tools.ToolOutcome("no matches for 'needle' in '.'", False)
    assert (
        call_in_child("grep", {"pattern": "needle", "glob": "b*"}, tmp_path).content
        == "b.txt:1: needle"
    )


@pytest.mark.parametrize(
    ("pattern", "advice"),
    [
        (r"(a)\1", "backreferences (\\1) are not supported"),
        ("foo(?=bar)", "lookahead (?=…) is not supported"),
        ("foo(?!bar)", "negative lookahead (?!…) is not supported"),
        ("(?<=x)foo", "lookbehind (?<=…) and (?<!…) are not supported"),
        (r"foo\Z", "write \\z for the end of the line, not \\Z"),
    ],
)
def test_patterns_re2_cannot_take_are_refused_saying_what_to_do(tmp_path, pattern, advice):
    (tmp_path / "f.txt").write_text("foobar\n")
    outcome = call("grep", {"pattern": pattern}, tmp_path)
    assert outcome.is_error
    assert outcome.content.startswith(f"invalid regular expression {pattern!r}: ")
    assert advice in outcome.content
    assert "RE2 syntax" in outcome.content


def test_grep_keeps_python_syntax_that_re2_shares(tmp_path: Path) -> None:
    (tmp_path / "f.py").write_text("def Main(x):\n    return x  # TODO\nclass K: pass\n")
    for pattern, line in [
        (r"(?i)^def main\((?P<arg>\w+)\):$", "f.py:1: def Main(x):"),
        (r"\bTODO\z", "f.py:2:     return x  # TODO"),
        (r"^\s+return\s\w+", "f.py:2:     return x  # TODO"),
        (r"^class [A-Z]: pass$", "f.py:3: class K: pass"),
        (r"(?:Main|K)\b.{0,4}$", "f.py:1: def Main(x):"),
    ]:
        outcome = call("grep", {"pattern": pattern}, tmp_path)
        assert outcome == tools.ToolOutcome(line, False), pattern


# through a real server: the health check answers while hostile patterns are matched


class Pulse(threading.Thread):
    """Times /healthz, one request after another, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answered = threading.Event()
        self.worst = 0.0

    def run(self) -> None:
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                assert http.get(f"{self.url}/healthz").status_code == 200
                self.worst = max(self.worst, time.monotonic() - started)
                self.answered.set()


def test_health_check_answers_while_hostile_grep_and_glob_run(
    live: ThreadServer, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hostile.txt").write_text("a" * 26 + "!\n")  # 2^26 steps for a backtracking re
    (work / ("a" * 70)).write_text("x\n")  # about 70^6 / 6! steps for "*a*a*a*a*a*a*b"
    script = [
        {
            "text": "Searching.",
            "tool_calls": [
                {"name": "grep", "input": {"pattern": "(a+)+$"}},
                {"name": "glob", "input": {"pattern": "*a*a*a*a*a*a*b"}},
            ],
        },
        {"text": "Done."},
    ]
    agent = scripted_agent(script, tools=["grep", "glob"], name="hostile")
    agent_id = httpx.post(f"{live.url}/agents", json=agent).json()["id"]
    body = {"agent_id": agent_id, "work_dir": str(work)}
    sid = httpx.post(f"{live.url}/sessions", json=body).json()["id"]

    pulse = Pulse(live.url)
    pulse.start()
    assert pulse.answered.wait(30)
    try:
        sent = httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": "go"}, timeout=120)
    finally:
        pulse.stop.set()
        pulse.join(120)
    assert sent.status_code == 200, sent.text

    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    results = [block for block in history[2]["content"] if block["type"] == "tool_result"]
    assert [(r["content"], r.get("is_error", False)) for r in results] == [
        ("no matches for '(a+)+$' in '.'", False),
        ("no files match '*a*a*a*a*a*a*b'", False),
    ]
    assert pulse.worst < HEALTH_BOUND_S, f"/healthz took {pulse.worst:.1f} s during the run"
