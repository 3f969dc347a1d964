"""`sessiond chat` driven through a pseudo-terminal against a real server: a line in, the
reply streamed out as it comes (tool calls on their own lines), Ctrl-D out; resuming by name."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.cli.chat import Renderer, clip
from server.events import decode
from tests.conftest import scripted_agent
from tests.live import ThreadServer
from tests.waiting import POLL_S, TIMEOUT_S, wait_until

ROOT = Path(__file__).resolve().parents[1]
WORDS = " ".join(f"word{i}" for i in range(40))
SCRIPT = [
    {"text": "Let me look.", "tool_calls": [{"name": "list_files", "input": {"path": "."}}]},
    {"text": WORDS},
]


class Terminal:
    """A child process on the slave side of a pty; we read and type on the master side."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "SESSIOND_URL"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.output = ""

    def read_until(self, pattern: str, timeout: float = TIMEOUT_S) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if ready := re.search(pattern, self.output):
                return ready
            if select.select([self.master], [], [], POLL_S)[0]:  # wakes as soon as output comes
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the terminal closed before {pattern!r}: {self.output!r}"
                self.output += chunk.decode(errors="replace").replace("\r\n", "\n")
            return re.search(pattern, self.output)

        shown = f"{pattern!r} in the terminal's output"
        match: re.Match[str] = wait_until(found, lambda: f"{shown}: {self.output!r}", timeout, 0)
        return match

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        code = self.proc.wait(20)
        os.close(self.master)
        return code


@pytest.fixture
def agent_id(live: ThreadServer, tmp_path: Path) -> str:
    (tmp_path / "notes.txt").write_text("hi\n")
    body = scripted_agent(SCRIPT, tools=["list_files"], options={"token_delay_ms": 40})
    return str(httpx.post(f"{live.url}/agents", json=body).json()["id"])


def test_chat_streams_replies_and_leaves_on_ctrl_d(
    live: ThreadServer, agent_id: str, tmp_path: Path
) -> None:
    httpx.post(f"{live.url}/sessions", json={"name": "pty-chat", "work_dir": str(tmp_path)})
    term = Terminal("chat", "--session", "pty-chat", "--agent", agent_id, "--url", live.url)
    term.read_until(r"session pty-chat \(new\); Ctrl-D to leave\n> ")
    term.type("what is here?\n")
    term.read_until(r"-> list_files \{\"path\":\"\.\"\}")
    term.read_until(r"<- notes\.txt")
    term.read_until(r"word0 ")
    assert "word39" not in term.output  # the reply is still coming: it streams
    term.read_until(r"word39\n\n> ")
    term.type("\x04")  # Ctrl-D
    assert term.close() == 0

    sid = httpx.get(f"{live.url}/sessions/pty-chat").json()["id"]
    history = httpx.get(f"{live.url}/sessions/{sid}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"][0]["text"] == "what is here?"

    again = Terminal("chat", "--session", "pty-chat", "--url", live.url)
    again.read_until(r"session pty-chat \(resumed, 4 messages\)")
    again.read_until(r"> ")
    again.type("\x04")
    assert again.close() == 0


def test_ctrl_c_stops_the_reply_and_cancels_its_run(live: ThreadServer, agent_id: str) -> None:
    term = Terminal("chat", "--session", "pty-stop", "--agent", agent_id, "--url", live.url)
    term.read_until(r"Ctrl-D to leave\n> ")
    term.type("go\n")
    term.read_until(r"word1 ")
    term.proc.send_signal(signal.SIGINT)  # Ctrl-C
    term.read_until(r"\[stopped\]\n> ")
    runs = httpx.get(f"{live.url}/sessions/pty-stop/runs").json()["data"]
    assert [run["status"] for run in runs] == ["cancelled"]
    term.type("\x04")
    assert term.close() == 0


def test_chat_without_a_name_makes_one_and_prints_it(live: ThreadServer, agent_id: str) -> None:
    term = Terminal("chat", "--agent", agent_id, "--url", live.url)
    name = term.read_until(r"session (chat-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}) \(new\)").group(1)
    term.read_until(r"> ")
    term.type("\x04")
    assert term.close() == 0
    assert httpx.get(f"{live.url}/sessions/{name}").status_code == 200


def test_chat_work_dir_gives_a_new_session_its_folder(
    live: ThreadServer, agent_id: str, tmp_path: Path
) -> None:
    args = ("chat", "--agent", agent_id, "--url", live.url)
    term = Terminal(*args, "--session", "wd-flag", "--work-dir", str(tmp_path))
    term.read_until(r"session wd-flag \(new\); Ctrl-D to leave\n> ")
    term.type("what is here?\n")
    term.read_until(r"<- notes\.txt")  # the tool ran in the folder
    term.read_until(r"word39\n\n> ")
    term.type("\x04")
    assert term.close() == 0
    assert httpx.get(f"{live.url}/sessions/wd-flag").json()["work_dir"] == str(tmp_path)

    # without the flag: the current folder, which this server allows
    here = Terminal(*args, "--session", "wd-here", cwd=tmp_path)
    here.read_until(r"session wd-here \(new\)")
    here.read_until(r"> ")
    here.type("\x04")
    assert here.close() == 0
    assert httpx.get(f"{live.url}/sessions/wd-here").json()["work_dir"] == str(tmp_path)

    # a current folder the server does not allow: said, and the session has none
    elsewhere = Terminal(*args, "--session", "wd-none")
    elsewhere.read_until(r"does not allow .* as a work_dir")
    elsewhere.read_until(r"session wd-none \(new\)")
    elsewhere.read_until(r"> ")
    elsewhere.type("\x04")
    assert elsewhere.close() == 0
    assert httpx.get(f"{live.url}/sessions/wd-none").json()["work_dir"] is None

    # a folder asked for that the server does not allow: an error, no session
    refused = Terminal(*args, "--session", "wd-bad", "--work-dir", str(ROOT))
    refused.read_until(r"sessiond chat: work_dir .* is outside the allowed roots")
    assert refused.close() == 1
    assert httpx.get(f"{live.url}/sessions/wd-bad").status_code == 404


def test_chat_reports_an_unreachable_server(tmp_path: Path) -> None:
    term = Terminal("chat", "--url", "http://127.0.0.1:9")
    term.read_until(r"sessiond chat: cannot reach sessiond at http://127\.0\.0\.1:9")
    assert term.close() == 1


def test_renderer_shows_tool_calls_compactly() -> None:
    class Out:
        text = ""

        def write(self, chunk: str) -> None:
            self.text += chunk

        def flush(self) -> None:
            pass

    out = Out()
    renderer = Renderer(out)  # type: ignore[arg-type]
    events = [
        ("text_delta", '{"text":"Looking","index":0}'),
        (
            "content_block_start",
            '{"index":1,"content_block":{"type":"tool_use","id":"t","name":"grep","input":{}}}',
        ),
        ("input_json_delta", '{"partial_json":"{\\"pattern\\":","index":1}'),
        ("input_json_delta", '{"partial_json":"\\"x\\"}","index":1}'),
        ("content_block_stop", '{"index":1}'),
        ("tool_result", '{"tool_use_id":"t","name":"grep","content":"a\\nb","is_error":true}'),
        ("error", '{"error":{"type":"provider_error","message":"down"}}'),
        ("done", '{"status":"failed","usage":{},"steps":1,"run_id":"r","stop_reason":null}'),
    ]
    for name, data in events:
        renderer.show(decode(('{"type":"' + name + '",' + data[1:]).encode()))
    assert out.text == ('Looking\n  -> grep {"pattern":"x"}\n  !! a b\n[error] down\n[failed]\n\n')
    assert clip("x" * 200, 10) == "x" * 9 + "…"
