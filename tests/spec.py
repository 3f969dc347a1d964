"""openapi.yaml for tests: load it, validate JSON against its schemas (its `$ref`s resolved
against the whole document), and check a real response against the operation that documents
it, server-sent events included.

Response objects in the spec are open (clients must tolerate new fields), but tests validate
against a strict copy in which every object schema that lists its properties forbids others,
so that a field the server sends and the spec does not document fails a test.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
SPEC_URI = "urn:sessiond:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@functools.cache
def _load() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as handle:
        spec: dict[str, Any] = yaml.safe_load(handle)
    return spec


def load_spec() -> dict[str, Any]:
    """A fresh copy of openapi.yaml."""
    return copy.deepcopy(_load())


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (path, method) the spec documents."""
    return {(path, m) for path, item in spec["paths"].items() for m in METHODS if m in item}


def strict(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy where object schemas reached through properties/items/oneOf/anyOf from a
    component schema forbid undocumented fields (allOf, not, if/then are left alone: a
    member of one describes only part of an object)."""
    result = copy.deepcopy(spec)

    def close(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for sub in node.get("properties", {}).values():
            close(sub)
        close(node.get("items"))
        for key in ("oneOf", "anyOf"):
            for sub in node.get(key, []):
                close(sub)

    for schema in result["components"]["schemas"].values():
        close(schema)
    return result


@dataclass
class Frame:
    """One server-sent event block."""

    id: str | None
    event: str
    data: dict[str, Any]
    raw: str

    def parsed(self) -> dict[str, Any]:
        """The event as an SSE parser delivers it (what the spec's stream schemas describe)."""
        event = {"event": self.event, "data": self.raw}
        return event if self.id is None else {**event, "id": self.id}


def parse_sse(body: str) -> tuple[int, list[Frame]]:
    """(retry ms, the event blocks) of a whole event-stream body, which must open with
    `retry:`: in a block of its own, or as the first line of the first event's block."""
    blocks = [b for b in body.replace("\r\n", "\n").split("\n\n") if b.strip()]
    blocks = [b for b in blocks if not b.startswith(":")]  # comments (pings) carry no event
    assert blocks, "empty event stream"
    first = blocks[0].split("\n")
    assert first[0].startswith("retry: "), f"no retry line first: {blocks[0]!r}"
    if len(first) > 1:  # the first event's block opens with it (the Responses streams)
        blocks = [blocks[0], "\n".join(first[1:]), *blocks[1:]]
    frames = []
    for block in blocks[1:]:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            assert name not in fields, f"field {name!r} twice in {block!r}"
            fields[name] = value.removeprefix(" ")
        assert set(fields) <= {"id", "event", "data"}, block
        raw = fields["data"]
        frames.append(Frame(fields.get("id"), fields["event"], json.loads(raw), raw))
    return int(first[0].removeprefix("retry: ")), frames


class Spec:
    """The spec with a registry that resolves its `$ref`s, strict by default."""

    def __init__(self, spec: dict[str, Any] | None = None, *, closed: bool = True) -> None:
        raw = spec if spec is not None else load_spec()
        self.doc = strict(raw) if closed else raw
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)

    def resolve(self, node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        """Follow `$ref`s to a component (response, header, parameter, request body):
        the node and its JSON pointer (`#/...`)."""
        while "$ref" in node:
            pointer = node["$ref"]
            node = self.at(pointer)
        return node, pointer

    def at(self, pointer: str) -> Any:
        target: Any = self.doc
        for part in pointer.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    def validator(self, pointer: str) -> Draft202012Validator:
        """A validator for the schema at `pointer` (e.g. `#/components/schemas/Agent`)."""
        return Draft202012Validator(
            {"$ref": SPEC_URI + pointer},
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def validate(self, instance: Any, pointer: str) -> None:
        self.validator(pointer).validate(instance)

    def operation(self, path: str, method: str) -> dict[str, Any]:
        op: dict[str, Any] = self.doc["paths"][path][method.lower()]
        return op

    def check(self, response: httpx.Response, path: str) -> list[Frame]:
        """Assert that `response` (to a request on the spec path `path`) is documented: its
        status, its required headers, its media type and its body's schema. For an event
        stream, returns its events, each validated against the stream's schema (one parsed
        event) and its data against that schema's `contentSchema`."""
        method = response.request.method
        responses = self.operation(path, method)["responses"]
        status = str(response.status_code)
        assert status in responses, f"{method} {path}: {status} is not documented: {response.text}"
        base = f"#/paths/{_escape(path)}/{method.lower()}/responses/{status}"
        documented, base = self.resolve(responses[status], base)
        for name, header in documented.get("headers", {}).items():
            header, where = self.resolve(header, f"{base}/headers/{_escape(name)}")
            value = response.headers.get(name)
            if header.get("required"):
                assert value is not None, f"{method} {path} {status}: no {name} header"
            if value is not None:
                parsed = int(value) if header["schema"].get("type") == "integer" else value
                self.validate(parsed, f"{where}/schema")
        content = documented.get("content")
        if not content:
            assert response.content == b"", f"{method} {path} {status}: unexpected body"
            return []
        media = response.headers.get("content-type", "").split(";")[0].strip()
        assert media in content, f"{method} {path} {status}: {media!r} is not documented"
        schema = f"{base}/content/{_escape(media)}/schema"
        if media != "text/event-stream":
            self.validate(response.json(), schema)
            return []
        _, frames = parse_sse(response.text)
        frame_schema, pointer = self.resolve(self.at(schema), schema)
        assert frame_schema["properties"]["data"]["contentMediaType"] == "application/json"
        data = self.validator(pointer + "/properties/data/contentSchema")
        for frame in frames:
            self.validate(frame.parsed(), pointer)
            data.validate(frame.data)
            assert frame.event == frame.data["type"], frame
        return frames


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")
