"""`sessiond sessions ls|show|rm|export|import` against a real server (the command runs
in-process; the server in a thread)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.cli import main
from tests.conftest import make_settings, scripted_agent
from tests.live import ThreadServer


def sessions(live: ThreadServer, *args: str) -> list[str]:
    return ["sessions", *args, "--url", live.url]


def populate(live: ThreadServer, tmp_path: Path) -> list[str]:
    body = scripted_agent([{"text": "the answer"}])
    agent = httpx.post(f"{live.url}/agents", json=body).json()["id"]
    made = []
    for name, tags in (("alpha", ["red"]), ("beta", ["blue"])):
        session = {"agent_id": agent, "name": name, "tags": tags, "title": f"{name} title"}
        sid = httpx.post(f"{live.url}/sessions", json=session).json()["id"]
        httpx.post(f"{live.url}/sessions/{sid}/message", json={"message": f"hello {name}"})
        made.append(sid)
    return made


def test_ls_and_show(live: ThreadServer, tmp_path: Path, capsys: Any) -> None:
    alpha, beta = populate(live, tmp_path)
    assert main(sessions(live, "ls")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "MSGS", "UPDATED", "TITLE"]
    assert [line.split()[1] for line in lines[1:]] == ["beta", "alpha"]
    assert lines[1].split()[2:4] == ["idle", "2"] and lines[1].endswith("beta title")

    assert main(sessions(live, "ls", "--tag", "red", "--json")) == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)] == [alpha]

    assert main(sessions(live, "show", "alpha")) == 0
    transcript = capsys.readouterr().out
    assert transcript.startswith("# alpha title") and "hello alpha" in transcript
    assert "the answer" in transcript
    assert main(sessions(live, "show", "beta", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["id"] == beta


def test_rm(live: ThreadServer, tmp_path: Path, capsys: Any) -> None:
    alpha, beta = populate(live, tmp_path)
    assert main(sessions(live, "rm", "alpha", "nope")) == 1
    captured = capsys.readouterr()
    assert captured.out == "deleted alpha\n"
    assert "nope" in captured.err and "not found" in captured.err
    assert httpx.get(f"{live.url}/sessions/{alpha}").status_code == 404
    assert httpx.get(f"{live.url}/sessions/{beta}").status_code == 200


def test_export_and_import(live: ThreadServer, tmp_path: Path, capsys: Any) -> None:
    alpha, _ = populate(live, tmp_path)
    out = tmp_path / "alpha.json"
    assert main(sessions(live, "export", "alpha", "-o", str(out))) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["session"]["id"] == alpha

    assert main(sessions(live, "export", "alpha", "--format", "markdown")) == 0
    assert "hello alpha" in capsys.readouterr().out
    assert main(sessions(live, "export", "alpha", "--format", "jsonl")) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    bundle = tmp_path / "all.zip"
    assert main(sessions(live, "export", "-o", str(bundle))) == 0
    capsys.readouterr()
    with zipfile.ZipFile(bundle) as archive:
        assert json.loads(archive.read("manifest.json"))["counts"]["sessions"] == 2

    for key in ("alpha", "beta"):
        httpx.delete(f"{live.url}/sessions/{key}")
    assert main(sessions(live, "import", str(bundle), "--keep-ids")) == 0
    report = capsys.readouterr().out
    assert report.startswith("imported 2 session(s), 4 messages, 2 runs")
    assert httpx.get(f"{live.url}/sessions/{alpha}").json()["name"] == "alpha"

    assert main(sessions(live, "import", str(out))) == 1  # its name is taken again
    assert "already exists" in capsys.readouterr().err
    assert main(sessions(live, "export", "alpha", "beta", "--format", "json")) == 1
    assert "exactly one session" in capsys.readouterr().err


def test_export_with_agents_imports_onto_an_empty_server(
    live: ThreadServer, tmp_path: Path, capsys: Any
) -> None:
    alpha, _ = populate(live, tmp_path)
    agent = httpx.get(f"{live.url}/sessions/{alpha}").json()["agent_id"]
    bundle, doc = tmp_path / "all.zip", tmp_path / "alpha.json"
    assert main(sessions(live, "export", "--with-agents", "-o", str(bundle))) == 0
    assert main(sessions(live, "export", "alpha", "--with-agents", "-o", str(doc))) == 0
    assert [a["id"] for a in json.loads(doc.read_text())["agents"]] == [agent]
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    other = ThreadServer(make_settings(empty)).start()
    try:
        assert main(sessions(other, "import", str(bundle), "--keep-ids")) == 0
        report = capsys.readouterr().out
        assert f"created agent {agent}  scripted" in report
        assert httpx.get(f"{other.url}/sessions/{alpha}").json()["agent_id"] == agent
        sent = httpx.post(f"{other.url}/sessions/{alpha}/message", json={"message": "again"})
        assert sent.json()["response"] == "the answer"
    finally:
        other.stop()


@pytest.mark.parametrize(
    "args",
    [("ls",), ("show", "x"), ("rm", "x"), ("export",), ("import", "/nonexistent.zip")],
)
def test_errors_exit_1_with_a_message(args: tuple[str, ...], capsys: Any) -> None:
    assert main(["sessions", *args, "--url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith(f"sessiond sessions {args[0]}: ")
