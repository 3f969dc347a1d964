"""openapi.yaml documents the session lifecycle routes: their request schemas carry the code's
constraints and the real app's answers match their response schemas (in-process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from server.api import forks, oneshot, transfer
from tests.conftest import app_client, make_settings, scripted_agent
from tests.spec import Spec, load_spec
from tests.test_openapi import check_run_stream, facets

JSON_BODY = {"content-type": "application/json"}
SNIFFED = {"content-type": "application/octet-stream"}  # the server tells json from zip
S = "/sessions/{session_id}"


@pytest.mark.parametrize(
    ("struct", "name"),
    [
        (oneshot.RunBody, "RunBody"),
        (forks.ForkBody, "ForkBody"),
        (transfer.ExportBody, "ExportBody"),
    ],
)
def test_request_schemas_carry_the_code_constraints(struct: type, name: str) -> None:
    ref = "#/components/schemas/{name}"
    _, code_defs = msgspec.json.schema_components([struct], ref_template=ref)
    spec_defs = load_spec()["components"]["schemas"]
    code, documented = code_defs[struct.__name__], spec_defs[name]
    assert documented.get("additionalProperties") is False
    assert set(documented["properties"]) == set(code["properties"])
    assert set(documented.get("required", [])) == set(code.get("required", []))
    for field, schema in code["properties"].items():
        mine = facets(schema, lambda r: code_defs[r.rsplit("/", 1)[1]])
        theirs = facets(documented["properties"][field], lambda r: spec_defs[r.rsplit("/", 1)[1]])
        assert not mine - theirs, f"{name}.{field}: the spec lacks {sorted(mine - theirs)}"


def test_lifecycle_responses_match_the_spec(tmp_path: Path) -> None:
    spec = Spec()
    step: dict[str, Any] = {"text": "Looking.", "tool_calls": [{"name": "list_files"}]}
    (tmp_path / "notes.txt").write_text("hi")

    async def go() -> None:
        async with app_client(make_settings(tmp_path)) as http:
            body = scripted_agent([step, {"text": "found notes"}], tools=["list_files"])
            agent = (await http.post("/agents", json=body)).json()["id"]
            answer = await http.post(
                "/run", json={"prompt": "look", "agent_id": agent, "work_dir": str(tmp_path)}
            )
            spec.check(answer, "/run")
            sid = answer.json()["session_id"]
            streamed = await http.post(
                "/run", json={"prompt": "x", "continue": True, "stream": True}
            )
            check_run_stream(spec, streamed, "/run")
            ephemeral = {"prompt": "x", "session_id": sid, "resume": True, "no_persistence": True}
            spec.check(await http.post("/run", json=ephemeral), "/run")
            spec.check(await http.post("/run", json={"prompt": "x", "resume": True}), "/run")

            archived = await http.post(f"/sessions/{sid}/archive")
            spec.check(archived, S + "/archive")
            busy = await http.post("/run", json={"prompt": "x", "session_id": sid, "resume": True})
            assert busy.json()["error"]["type"] == "archived"
            spec.check(busy, "/run")
            spec.check(await http.post(f"/sessions/{sid}/unarchive"), S + "/unarchive")
            spec.check(await http.post("/sessions/nope/archive"), S + "/archive")

            first = (await http.get(f"/sessions/{sid}/messages")).json()["data"][1]["id"]
            fork = await http.post(f"/sessions/{sid}/fork", json={"at_message_id": first})
            assert fork.status_code == 201
            spec.check(fork, S + "/fork")
            spec.check(await http.post(f"/sessions/{sid}/fork"), S + "/fork")
            spec.check(
                await http.post(f"/sessions/{sid}/fork", json={"at_message_id": "x"}), S + "/fork"
            )

            found = await http.get("/sessions/search", params={"q": "notes"})
            assert found.json()["data"]
            spec.check(found, "/sessions/search")
            spec.check(await http.get("/sessions/search"), "/sessions/search")

            exported = await http.get(f"/sessions/{sid}/export")
            spec.check(exported, S + "/export")
            spec.check(await http.get(f"/sessions/{sid}/export?format=x"), S + "/export")
            imported = await http.post(
                "/sessions/import", content=exported.content, headers=JSON_BODY
            )
            assert imported.status_code == 201
            spec.check(imported, "/sessions/import")
            doc = exported.json()
            clash = await http.post("/sessions/import", json={**doc, "keep_ids": True})
            assert clash.status_code == 409
            spec.check(clash, "/sessions/import")
            spec.check(
                await http.post("/sessions/import", content=b"PK\x03\x04", headers=SNIFFED),
                "/sessions/import",
            )

            bundle = await http.post("/sessions/export", json={"ids": [sid]})
            assert bundle.headers["content-type"] == "application/zip"
            bad = await http.post("/sessions/export", json={"ids": []})
            spec.check(bad, "/sessions/export")

    asyncio.run(go())
