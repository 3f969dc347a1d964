"""Export (json, jsonl, markdown, zip bundle) and import: the round trip keeps the content,
and a bad import is a 4xx that stores nothing (in-process app)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_client, make_settings, scripted_agent

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

TOOL_TURN = [
    {"text": "Looking.", "tool_calls": [{"name": "list_files", "input": {"path": "."}}]},
    {"text": "One file: notes.txt"},
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def populate(http: Any, tmp_path: Path) -> list[str]:
    """Three sessions: one with a tool turn and tags, its fork (archived), a plain one."""
    (tmp_path / "notes.txt").write_text("hello\n")
    body = scripted_agent(TOOL_TURN, name=f"a{time.monotonic_ns()}", tools=["list_files"])
    agent = (await http.post("/agents", json=body)).json()["id"]
    session = {"agent_id": agent, "work_dir": str(tmp_path), "tags": ["x"], "ttl_seconds": 3600}
    first = (await http.post("/sessions", json={**session, "metadata": {"k": [1]}})).json()["id"]
    await http.post(f"/sessions/{first}/message", json={"message": "ls"})
    await http.post(f"/sessions/{first}/message", json={"message": "again"})
    fork = (await http.post(f"/sessions/{first}/fork", json={"title": "branch"})).json()["id"]
    await http.post(f"/sessions/{fork}/archive")
    plain = (await http.post("/sessions", json={"title": "empty"})).json()["id"]
    return [first, fork, plain]


JSON_BODY = {"content-type": "application/json"}
SNIFFED = {"content-type": "application/octet-stream"}  # the server tells json from zip
ID_KEYS = ("id", "session_id", "run_id", "parent_id", "forked_from_message_id")


def normalized(value: Any, ids: dict[str, str] | None = None) -> Any:
    """The export with ids numbered by first appearance and volatile fields dropped."""
    ids = {} if ids is None else ids
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("updated_at", "expires_at"):
                continue
            if key in ID_KEYS and isinstance(item, str) and item != "default":
                item = ids.setdefault(item, f"<{len(ids)}>")
            out[key] = normalized(item, ids)
        return out
    if isinstance(value, list):
        return [normalized(item, ids) for item in value]
    return value


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(files: dict[str, bytes], manifest: dict[str, Any] | None = None) -> bytes:
    files = dict(files)
    if manifest is not None:
        files["manifest.json"] = json.dumps(manifest).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def resealed(files: dict[str, bytes], **changes: bytes) -> bytes:
    """The bundle with some files changed and a manifest that matches them."""
    files = {**files, **changes}
    manifest = json.loads(files["manifest.json"])
    for name in changes:
        manifest["checksums"][name] = hashlib.sha256(files[name]).hexdigest()
    return rezip(files, manifest)


def test_single_export_formats(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            first, _, _ = await populate(http, tmp_path)
            doc = (await http.get(f"/sessions/{first}/export")).json()
            assert doc["version"] == 1 and doc["session"]["id"] == first
            messages = (await http.get(f"/sessions/{first}/messages")).json()["data"]
            assert doc["messages"] == messages and len(messages) == 8
            assert doc["runs"] == (await http.get(f"/sessions/{first}/runs")).json()["data"][::-1]
            assert doc["runs"][0]["tool_calls"][0]["name"] == "list_files"

            lines = await http.get(f"/sessions/{first}/export?format=jsonl")
            assert lines.headers["content-type"].startswith("application/x-ndjson")
            assert [json.loads(line) for line in lines.text.splitlines()] == messages

            md = await http.get(f"/sessions/{first}/export", params={"format": "markdown"})
            assert md.headers["content-type"].startswith("text/markdown")
            text = md.text
            assert text.startswith("# ") and f"**id**: {first}" in text
            assert "## User · 1 ·" in text and "**Tool call** `list_files`" in text
            assert '"path": "."' in text and "**Tool result** from `list_files`" in text
            assert "notes.txt" in text and "One file: notes.txt" in text and "## Runs" in text

            bad = await http.get(f"/sessions/{first}/export?format=pdf")
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "format"
            assert (await http.get("/sessions/nope/export")).status_code == 404

    run(go())


def test_bundle_export_holds_manifest_checksums_and_transcripts(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            first, fork, plain = await populate(http, tmp_path)
            everything = await http.post("/sessions/export", json={})
            assert everything.status_code == 200, everything.text
            assert everything.headers["content-type"] == "application/zip"
            files = unzip(everything.content)
            manifest = json.loads(files["manifest.json"])
            assert manifest["format"] == "sessiond-bundle" and manifest["version"] == 1
            assert manifest["counts"] == {"sessions": 3, "messages": 16, "runs": 2}
            for name, digest in manifest["checksums"].items():
                assert hashlib.sha256(files[name]).hexdigest() == digest
            expected = {"manifest.json", "sessions.json", "messages.jsonl"}
            expected |= {f"transcripts/{sid}.md" for sid in (first, fork, plain)}
            assert set(files) == expected
            entries = json.loads(files["sessions.json"])
            assert [e["session"]["id"] for e in entries] == [first, fork, plain]
            assert len(files["messages.jsonl"].splitlines()) == 16

            tagged = unzip((await http.post("/sessions/export", json={"tags": ["x"]})).content)
            # without a status, archived sessions are exported too (the fork copied the tag)
            assert json.loads(tagged["manifest.json"])["counts"]["sessions"] == 2
            idle = unzip((await http.post("/sessions/export", json={"status": "idle"})).content)
            assert json.loads(idle["manifest.json"])["counts"]["sessions"] == 2
            chosen = await http.post("/sessions/export", json={"ids": [plain, first]})
            entries = json.loads(unzip(chosen.content)["sessions.json"])
            assert [e["session"]["id"] for e in entries] == [plain, first]

            for body, status in [
                ({"ids": [first], "tags": ["x"]}, 400),
                ({"ids": []}, 400),
                ({"ids": ["nope"]}, 404),
                ({"status": "gone"}, 400),
                ({"extra": 1}, 400),
            ]:
                response = await http.post("/sessions/export", json=body)
                assert response.status_code == status, (body, response.text)

    run(go())


def test_json_round_trip_with_new_ids(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            first, _, _ = await populate(http, tmp_path)
            before = (await http.get(f"/sessions/{first}/export")).content
            imported = await http.post(
                "/sessions/import", content=before, headers={"content-type": "application/json"}
            )
            assert imported.status_code == 201, imported.text
            result = imported.json()
            assert (result["message_count"], result["run_count"]) == (8, 2)
            [copy] = result["sessions"]
            assert copy["id"] != first
            after = (await http.get(f"/sessions/{copy['id']}/export")).json()
            assert normalized(after) == normalized(json.loads(before))
            sent = await http.post(f"/sessions/{copy['id']}/message", json={"message": "more"})
            assert sent.status_code == 200, sent.text

    run(go())


def test_bundle_round_trip_into_another_server_keeping_ids(tmp_path: Path) -> None:
    origin, target = tmp_path / "origin", tmp_path / "target"
    origin.mkdir()
    target.mkdir()

    async def go() -> None:
        async with app_client(make_settings(origin, allow_roots=[str(tmp_path)])) as http:
            await populate(http, origin)
            bundle = (await http.post("/sessions/export", json={})).content
        async with app_client(make_settings(target, allow_roots=[str(tmp_path)])) as http:
            query = "?keep_ids=true&agent_id=default"
            imported = await http.post(
                f"/sessions/import{query}",
                content=bundle,
                headers={"content-type": "application/zip"},
            )
            assert imported.status_code == 201, imported.text
            again = (await http.post("/sessions/export", json={})).content
            clash = await http.post(f"/sessions/import{query}", content=bundle, headers=SNIFFED)
            assert clash.status_code == 409 and clash.json()["error"]["type"] == "conflict"
            listed = (await http.get("/sessions?limit=100")).json()["data"]
            assert len(listed) == 2  # (the third is archived)
        one, two = unzip(bundle), unzip(again)
        assert set(one) == set(two)
        manifests = [json.loads(files["manifest.json"]) for files in (one, two)]
        assert manifests[0]["counts"] == manifests[1]["counts"]
        assert one["messages.jsonl"] == two["messages.jsonl"]  # ids kept: byte for byte
        entries = [json.loads(files["sessions.json"]) for files in (one, two)]
        for entry in entries[0]:
            entry["session"]["agent_id"] = "default"  # as ?agent_id= asked
        assert normalized(entries[0]) == normalized(entries[1])

    run(go())


def test_unknown_agent_and_foreign_work_dir(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            doc = {
                "version": 1,
                "session": (await http.post("/sessions", json={"name": "n"})).json(),
                "runs": [],
                "messages": [],
            }
            doc["session"]["name"] = None
            doc["session"]["agent_id"] = "01J0000000000000000000AGNT"
            refused = await http.post("/sessions/import", json=doc)
            assert refused.status_code == 400 and refused.json()["error"]["field"] == "agent_id"
            assert "?agent_id=" in refused.json()["error"]["message"]
            mapped = await http.post("/sessions/import?agent_id=default", json=doc)
            assert mapped.status_code == 201
            assert mapped.json()["sessions"][0]["agent_id"] == "default"
            missing = await http.post("/sessions/import?agent_id=nope", json=doc)
            assert missing.status_code == 404

            doc["session"]["agent_id"] = "default"
            doc["session"]["work_dir"] = "/etc"
            outside = await http.post("/sessions/import", json=doc)
            assert outside.status_code == 400 and outside.json()["error"]["field"] == "work_dir"
            moved = await http.post(f"/sessions/import?work_dir={tmp_path}", json=doc)
            assert moved.status_code == 201
            assert moved.json()["sessions"][0]["work_dir"] == str(tmp_path.resolve())

    run(go())


def message(seq: int, role: str, *blocks: dict[str, Any], sid: str = "S") -> dict[str, Any]:
    return {
        "id": f"m{seq}",
        "session_id": sid,
        "seq": seq,
        "role": role,
        "content": list(blocks),
        "run_id": None,
        "created_at": "2026-01-01T00:00:00.000Z",
    }


TEXT = {"type": "text", "text": "hi"}
CALL = {"type": "tool_use", "id": "c1", "name": "read_file", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "c1", "content": "ok"}
STRAY = {"type": "tool_result", "tool_use_id": "zz", "content": "ok"}

BAD_HISTORIES = [
    ([message(1, "user", STRAY)], "answers no open tool call"),
    ([message(1, "user", TEXT), message(3, "assistant", TEXT)], "numbered"),
    ([message(1, "user")], "at least one block"),
    ([message(1, "user", CALL)], "cannot hold a tool_use"),
    ([message(1, "assistant", CALL), message(2, "user", TEXT, RESULT)], "come first"),
    ([message(1, "user", TEXT, sid="other")], "belongs to session"),
    ([{**message(1, "user", TEXT), "run_id": "r9"}], "does not hold"),
    ([{**message(1, "user", TEXT), "created_at": "yesterday"}], "timestamp"),
]


@pytest.mark.parametrize(("messages", "why"), BAD_HISTORIES)
def test_invalid_history_is_refused(tmp_path: Path, messages: list[Any], why: str) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            session = (await http.post("/sessions", json={})).json()
            await http.delete(f"/sessions/{session['id']}")
            session["id"] = "S"
            doc = {"version": 1, "session": session, "runs": [], "messages": messages}
            refused = await http.post("/sessions/import", json=doc)
            assert refused.status_code == 400, refused.text
            assert why in refused.json()["error"]["message"]
            assert (await http.get("/sessions")).json()["data"] == []

    run(go())


ANSWERED = "answered on import"


def test_a_history_that_goes_on_past_a_call_gets_it_answered_on_import(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            session = (await http.post("/sessions", json={})).json()
            await http.delete(f"/sessions/{session['id']}")
            session["id"] = "S"
            second = {**CALL, "id": "c2"}
            history = [
                message(1, "user", TEXT),
                message(2, "assistant", CALL),
                message(3, "user", TEXT),  # no result for c1
                message(4, "assistant", second),
                message(5, "assistant", TEXT),  # no result for c2, nor a user turn
                message(6, "user", TEXT),
            ]
            doc = {"version": 1, "session": session, "runs": [], "messages": history}
            imported = await http.post("/sessions/import", json=doc)
            assert imported.status_code == 201, imported.text
            result = imported.json()
            [copy] = result["sessions"]
            assert result["repaired"] == [{"session_id": copy["id"], "tool_use_ids": ["c1", "c2"]}]
            assert copy["message_count"] == result["message_count"] == 7
            stored = (await http.get(f"/sessions/{copy['id']}/messages")).json()["data"]
            assert [m["seq"] for m in stored] == [1, 2, 3, 4, 5, 6, 7]
            assert [m["role"] for m in stored] == [
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
            ]
            first, text = stored[2]["content"]
            assert first["tool_use_id"] == "c1" and first["is_error"] is True
            assert ANSWERED in first["content"] and text == TEXT
            [filler] = stored[4]["content"]
            assert filler["tool_use_id"] == "c2" and ANSWERED in filler["content"]
            assert stored[5]["content"] == [TEXT]

    run(go())


async def forked_after_a_tool_call(http: Any, tmp_path: Path) -> tuple[str, str, str]:
    """A session with a tool turn; its fork cut right after the call, then continued."""
    (tmp_path / "notes.txt").write_text("hello\n")
    body = scripted_agent(TOOL_TURN, name="forker", tools=["list_files"])
    agent = (await http.post("/agents", json=body)).json()["id"]
    session = {"agent_id": agent, "work_dir": str(tmp_path)}
    sid = (await http.post("/sessions", json=session)).json()["id"]
    await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
    call = (await http.get(f"/sessions/{sid}/messages")).json()["data"][1]
    assert call["content"][-1]["type"] == "tool_use"
    fork = await http.post(f"/sessions/{sid}/fork", json={"at_message_id": call["id"]})
    fid = fork.json()["id"]
    sent = await http.post(f"/sessions/{fid}/message", json={"message": "go on"})
    assert sent.status_code == 200, sent.text
    return sid, fid, call["content"][-1]["id"]


def check_answered(messages: list[dict[str, Any]], call_id: str) -> None:
    """The fork's history as imported: the open call answered, marked, before "go on"."""
    assert [m["role"] for m in messages[:3]] == ["user", "assistant", "user"]
    answer, text = messages[2]["content"]
    assert answer == {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": answer["content"],
        "is_error": True,
    }
    assert ANSWERED in answer["content"] and text["text"] == "go on"


def test_a_fork_cut_after_a_tool_call_imports_back_from_its_own_export(tmp_path: Path) -> None:
    origin, target = tmp_path / "origin", tmp_path / "target"
    origin.mkdir()
    target.mkdir()

    async def go() -> None:
        async with app_client(make_settings(origin, allow_roots=[str(tmp_path)])) as http:
            sid, fid, call_id = await forked_after_a_tool_call(http, origin)
            doc = (await http.get(f"/sessions/{fid}/export")).content
            imported = await http.post(
                "/sessions/import", content=doc, headers={"content-type": "application/json"}
            )
            assert imported.status_code == 201, imported.text
            [copy] = imported.json()["sessions"]
            assert imported.json()["repaired"] == [
                {"session_id": copy["id"], "tool_use_ids": [call_id]}
            ]
            check_answered(
                (await http.get(f"/sessions/{copy['id']}/messages")).json()["data"], call_id
            )
            again = await http.post(f"/sessions/{copy['id']}/message", json={"message": "more"})
            assert again.status_code == 200, again.text
            backup = (await http.post("/sessions/export?with_agents=true", json={})).content
        # the whole server's backup, onto an empty one
        async with app_client(make_settings(target, allow_roots=[str(tmp_path)])) as http:
            restored = await http.post(
                "/sessions/import?keep_ids=true",
                content=backup,
                headers={"content-type": "application/zip"},
            )
            assert restored.status_code == 201, restored.text
            result = restored.json()
            assert {s["id"] for s in result["sessions"]} >= {sid, fid}
            assert {"session_id": fid, "tool_use_ids": [call_id]} in result["repaired"]
            check_answered((await http.get(f"/sessions/{fid}/messages")).json()["data"], call_id)
            # the repaired history is one sessiond itself imports back once more
            again = (await http.get(f"/sessions/{fid}/export")).content
            reimported = await http.post("/sessions/import", content=again, headers=JSON_BODY)
            assert reimported.status_code == 201, reimported.text
            assert reimported.json()["repaired"] == []

    run(go())


def test_bundled_agents_are_matched_by_id_or_name_or_created(tmp_path: Path) -> None:
    origin, target = tmp_path / "origin", tmp_path / "target"
    origin.mkdir()
    target.mkdir()
    (origin / "notes.txt").write_text("hello\n")

    async def go() -> None:
        async with app_client(make_settings(origin, allow_roots=[str(tmp_path)])) as http:
            body = scripted_agent(TOOL_TURN, name="carried", tools=["list_files"])
            agent = (await http.post("/agents", json=body)).json()
            for shown_only in ("usable", "unusable_reason"):  # read-time facts, not exported
                agent.pop(shown_only, None)
            session = {"agent_id": agent["id"], "work_dir": str(origin)}
            sid = (await http.post("/sessions", json=session)).json()["id"]
            await http.post(f"/sessions/{sid}/message", json={"message": "ls"})
            plain = (await http.post("/sessions/export", json={"ids": [sid]})).content
            assert "agents.json" not in unzip(plain)
            bundle = (
                await http.post("/sessions/export?with_agents=true", json={"ids": [sid]})
            ).content
            files = unzip(bundle)
            assert json.loads(files["agents.json"]) == [agent]
            assert "agents.json" in json.loads(files["manifest.json"])["checksums"]
            doc = (await http.get(f"/sessions/{sid}/export?with_agents=true")).json()
            assert doc["agents"] == [agent]
            assert "agents" not in (await http.get(f"/sessions/{sid}/export")).json()

        async with app_client(make_settings(target, allow_roots=[str(tmp_path)])) as http:
            without = await http.post("/sessions/import", content=plain, headers=SNIFFED)
            assert without.status_code == 400 and "with_agents" in without.text
            imported = await http.post("/sessions/import", content=bundle, headers=SNIFFED)
            assert imported.status_code == 201, imported.text
            [made] = imported.json()["agents"]
            assert made == agent  # created as exported, its id kept
            assert (await http.get(f"/agents/{agent['id']}")).json() == {
                **agent,
                "usable": True,
                "unusable_reason": None,
            }
            [copy] = imported.json()["sessions"]
            assert copy["agent_id"] == agent["id"]
            sent = await http.post(f"/sessions/{copy['id']}/message", json={"message": "ls"})
            assert sent.json()["response"] == "One file: notes.txt"  # the carried script ran

            # again: the agent of that id is used, none created
            twice = await http.post("/sessions/import", content=bundle, headers=SNIFFED)
            assert twice.status_code == 201 and twice.json()["agents"] == []
            assert twice.json()["sessions"][0]["agent_id"] == agent["id"]
            # a json export with its agent, onto a server whose agent of that name has another id
            await http.delete(f"/sessions/{copy['id']}")
            await http.delete(f"/sessions/{twice.json()['sessions'][0]['id']}")
            await http.delete(f"/agents/{agent['id']}")
            other = (await http.post("/agents", json={**body, "options": {"script": []}})).json()
            by_name = await http.post("/sessions/import", json=doc)
            assert by_name.status_code == 201, by_name.text
            assert by_name.json()["agents"] == []
            assert by_name.json()["sessions"][0]["agent_id"] == other["id"] != agent["id"]
            listed = (await http.get("/agents")).json()["data"]
            assert [a["name"] for a in listed].count("carried") == 1

            # a carried agent this server could not run is refused, and nothing is stored
            doc["agents"][0]["provider"] = "nonesuch"
            doc["agents"][0]["name"] = "fresh"
            doc["session"]["agent_id"] = doc["agents"][0]["id"] = "01J0000000000000000000AGNT"
            before = len((await http.get("/sessions")).json()["data"])
            refused = await http.post("/sessions/import", json=doc)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["field"].startswith("agents")
            assert len((await http.get("/sessions")).json()["data"]) == before
            assert (await http.get("/agents/01J0000000000000000000AGNT")).status_code == 404

    run(go())


def test_valid_history_with_an_open_call_at_the_end_is_accepted(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            session = (await http.post("/sessions", json={})).json()
            history = [
                message(1, "user", TEXT),
                message(2, "user", TEXT),
                message(3, "assistant", CALL),
                message(4, "user", RESULT),
                message(5, "assistant", {**CALL, "id": "c2"}),
            ]
            for item in history:
                item["session_id"] = session["id"]
            doc = {"version": 1, "session": session, "runs": [], "messages": history}
            imported = await http.post("/sessions/import", json=doc)
            assert imported.status_code == 201, imported.text
            assert imported.json()["sessions"][0]["message_count"] == 5

    run(go())


def test_bad_bundles_are_400(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            await populate(http, tmp_path)
            files = unzip((await http.post("/sessions/export", json={"status": "idle"})).content)
            manifest = json.loads(files["manifest.json"])
            sessions_json = json.loads(files["sessions.json"])
            sessions_json[0]["session"]["name"] = "bad name!"
            cases = {
                "not a zip": b"PK\x03\x04garbage",
                "no manifest": rezip({k: v for k, v in files.items() if k != "manifest.json"}),
                "no messages": rezip({k: v for k, v in files.items() if k != "messages.jsonl"}),
                "bad checksum": rezip({**files, "messages.jsonl": files["messages.jsonl"] + b"\n"}),
                "bad manifest": rezip(files, {"format": "sessiond-bundle"}),
                "other version": rezip(files, {**manifest, "version": 9}),
                "other format": rezip(files, {**manifest, "format": "tarball"}),
                "wrong counts": rezip(
                    files, {**manifest, "counts": {**manifest["counts"], "runs": 7}}
                ),
                "bad json": resealed(files, **{"sessions.json": b"[{"}),
                "bad line": resealed(files, **{"messages.jsonl": b'{"id": 1}\n'}),
                "bad name": resealed(
                    files, **{"sessions.json": json.dumps(sessions_json).encode()}
                ),
                "stray message": resealed(
                    files,
                    **{
                        "messages.jsonl": files["messages.jsonl"].replace(
                            b'"session_id":"', b'"session_id":"X', 1
                        )
                    },
                ),
            }
            for why, data in cases.items():
                response = await http.post(
                    "/sessions/import", content=data, headers={"content-type": "application/zip"}
                )
                assert response.status_code == 400, (why, response.text)
                assert response.json()["error"]["type"] == "invalid_request"
            assert len((await http.get("/sessions")).json()["data"]) == 2

    run(go())


def test_corrupted_bundles_never_fail_the_server(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            await populate(http, tmp_path)
            bundle = (await http.post("/sessions/export", json={})).content
            rng = random.Random(5)
            statuses = set()
            for _ in range(150):
                data = bytearray(bundle)
                for _ in range(rng.randint(1, 8)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                if rng.random() < 0.2:
                    data = data[: rng.randrange(len(data))]
                response = await http.post("/sessions/import", content=bytes(data), headers=SNIFFED)
                statuses.add(response.status_code)
                assert response.status_code < 500, response.text
                # (a flip in a zip timestamp, say, changes nothing that matters)
                assert response.status_code == 201 or response.json()["type"] == "error"
            assert 400 in statuses

    run(go())


def test_import_size_limits(tmp_path: Path) -> None:
    async def go() -> None:
        settings = make_settings(tmp_path, max_import_bytes=40_000)
        async with app_client(settings) as http:
            big = await http.post(
                "/sessions/import", content=b"{" + b" " * 40_000 + b"}", headers=JSON_BODY
            )
            assert big.status_code == 413
            assert big.json()["error"]["type"] == "payload_too_large"
            bomb = rezip({"manifest.json": b"{}", "sessions.json": b" " * 170_000})
            assert len(bomb) < 40_000
            unpacked = await http.post("/sessions/import", content=bomb, headers=SNIFFED)
            assert unpacked.status_code == 413, unpacked.text
            deep = b'{"version": 1, "session": {"metadata": ' + b'{"a":' * 5000 + b"1" + b"}" * 5002
            for body in (b"", b"   ", b"[]", b"{}", b"null", b"\xff\xfe", deep):
                response = await http.post("/sessions/import", content=body, headers=JSON_BODY)
                assert response.status_code == 400, (body, response.text)
            flag = await http.post(
                "/sessions/import?keep_ids=maybe", content=b"{}", headers=JSON_BODY
            )
            assert flag.status_code == 400 and flag.json()["error"]["field"] == "keep_ids"

    run(go())


def test_name_clash_on_import_is_409_and_imports_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            await http.post("/sessions", json={"name": "kept"})
            plain = (await http.post("/sessions", json={"name": "plain"})).json()["id"]
            bundle = (await http.post("/sessions/export", json={})).content
            await http.delete(f"/sessions/{plain}")
            clash = await http.post("/sessions/import", content=bundle, headers=SNIFFED)
            assert clash.status_code == 409 and clash.json()["error"]["field"] == "name"
            names = [s["name"] for s in (await http.get("/sessions")).json()["data"]]
            assert names == ["kept"]

    run(go())
