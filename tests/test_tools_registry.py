"""server.tools: the registry, spec(), input checking, and how call() reports failures."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import msgspec
import pytest

from server import tools
from server.errors import ToolError
from server.models import ToolSpec
from server.tools import inputs
from server.tools.base import ToolContext

jsonschema = pytest.importorskip("jsonschema")


def call(name: str, input: dict[str, Any], work_dir: Any) -> tools.ToolOutcome:
    return asyncio.run(tools.call(name, input, ToolContext(str(work_dir), "s1", "r1")))


class NoInput(msgspec.Struct):
    pass


class Raising:
    """A tool that fails the way it is told to."""

    description = "fails"
    Input = NoInput
    read_only = True

    def __init__(self, name: str, exc: BaseException) -> None:
        self.name = name
        self.exc = exc

    async def run(self, input: NoInput, ctx: ToolContext) -> str:
        raise self.exc


def test_builtin_tools_and_read_only_set():
    assert set(tools.BUILTIN) == {
        "list_files",
        "read_file",
        "write_file",
        "edit_file",
        "glob",
        "grep",
        "run_command",
    }
    assert tools.READ_ONLY == ("list_files", "read_file", "glob", "grep")
    assert tools.is_builtin("grep")
    assert not tools.is_builtin("rm_rf")


@pytest.mark.parametrize("name", sorted(tools.BUILTIN))
def test_spec_is_a_valid_closed_json_schema(name):
    found = tools.spec(name)
    assert isinstance(found, ToolSpec)
    assert found.name == name
    assert len(found.description) > 40
    jsonschema.Draft202012Validator.check_schema(found.input_schema)
    assert found.input_schema["type"] == "object"
    assert found.input_schema["additionalProperties"] is False
    properties = found.input_schema["properties"]
    assert set(found.input_schema.get("required", ())) <= set(properties)
    assert all(prop.get("description") for prop in properties.values())


def test_spec_hands_out_a_copy_of_the_schema():
    tools.spec("read_file").input_schema["properties"].clear()
    assert tools.spec("read_file").input_schema["properties"]


def test_spec_of_unknown_tool_is_key_error():
    with pytest.raises(KeyError):
        tools.spec("nope")


def test_unknown_tool_lists_the_available_ones(tmp_path):
    outcome = call("delete_everything", {}, tmp_path)
    assert outcome.is_error
    assert outcome.content.startswith("unknown tool 'delete_everything'; available: ")
    assert "read_file" in outcome.content and "run_command" in outcome.content


@pytest.mark.parametrize(
    ("name", "input", "message"),
    [
        ("read_file", {}, "missing required field 'path'"),
        ("read_file", {"path": 1}, "'path' must be a string, got integer"),
        ("read_file", {"path": "a", "line": 3}, "unknown field 'line' (allowed: path, "),
        ("read_file", {"path": "a", "limit": True}, "'limit' must be an integer, got boolean"),
        ("read_file", {"path": "a", "offset": 1.5}, "'offset' must be an integer, got number"),
        ("read_file", {"path": "a", "offset": 0}, "'offset' must be at least 1, got 0"),
        ("read_file", {"path": ""}, "'path' must not be empty"),
        ("list_files", {"recursive": "yes"}, "'recursive' must be a boolean, got string"),
        ("edit_file", {"path": "a", "old": "", "new": "x"}, "'old' must not be empty"),
        ("run_command", {"command": "true", "timeout_s": 601}, "'timeout_s' must be at most 600"),
        ("run_command", {"command": None}, "'command' must be a string, got null"),
    ],
)
def test_input_is_checked_against_the_schema_naming_the_field(tmp_path, name, input, message):
    outcome = call(name, input, tmp_path)
    assert outcome.is_error
    assert outcome.content.startswith(f"invalid input for {name}: ")
    assert message in outcome.content


def test_input_that_is_not_an_object_is_refused(tmp_path):
    outcome = call("read_file", ["a"], tmp_path)  # type: ignore[arg-type]
    assert outcome == tools.ToolOutcome(
        "invalid input for read_file: the input must be an object, got array", True
    )


def test_integral_number_counts_as_integer(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    outcome = call("read_file", {"path": "a.txt", "limit": 1.0}, tmp_path)
    assert outcome == tools.ToolOutcome(
        "     1\tone\n[more lines follow; read on with offset=2]", False
    )


class Inner(msgspec.Struct, forbid_unknown_fields=True):
    n: Annotated[str, msgspec.Meta(min_length=3)]


class Outer(msgspec.Struct):
    xs: list[Annotated[int, msgspec.Meta(le=9)]] = []
    o: Inner | None = None


def problem(value: Any) -> str | None:
    try:
        inputs.decode(Outer, value)
    except inputs.Invalid as exc:
        return str(exc)
    return None


def test_input_check_names_fields_in_nested_arrays_and_objects():
    assert problem({"xs": [1, 2.0], "o": {"n": "abc"}}) is None
    assert problem({"xs": [1, "a"]}) == "'xs[1]' must be an integer, got string"
    assert problem({"xs": [10]}) == "'xs[0]' must be at most 9, got 10"
    assert problem({"o": {}}) == "missing required field 'o.n'"
    assert problem({"o": {"n": "ab"}}) == "'o.n' must be at least 3 characters long"
    assert problem({"o": {"n": "abc", "m": 1}}) == "unknown field 'o.m' (allowed: n)"


@pytest.mark.parametrize("name", sorted(tools.BUILTIN))
def test_spec_is_the_input_structs_schema_flat_for_providers(name):
    tool = tools.BUILTIN[name]
    found = tools.spec(name).input_schema
    assert found == inputs.schema(tool.Input)
    assert "$ref" not in json.dumps(found) and "$defs" not in found
    assert {"type", "properties", "required"} <= set(found)
    fields = msgspec.structs.fields(tool.Input)
    assert list(found["properties"]) == [field.encode_name for field in fields]
    assert found["required"] == [field.encode_name for field in fields if field.required]


def test_schema_of_a_nested_struct_is_inlined():
    found = inputs.schema(Outer)
    assert "$defs" not in found and "$ref" not in json.dumps(found)
    assert found["properties"]["o"]["anyOf"][0] == {
        "type": "object",
        "title": "Inner",
        "properties": {"n": {"type": "string", "minLength": 3}},
        "required": ["n"],
        "additionalProperties": False,
    }


def test_null_for_an_optional_field_is_refused(tmp_path):
    outcome = call("grep", {"pattern": "x", "glob": None}, tmp_path)
    assert outcome == tools.ToolOutcome(
        "invalid input for grep: 'glob' must be a string, got null", True
    )


def test_tool_error_becomes_an_error_outcome(tmp_path, monkeypatch):
    monkeypatch.setitem(tools.BUILTIN, "picky", Raising("picky", ToolError("not like that")))
    assert call("picky", {}, tmp_path) == tools.ToolOutcome("not like that", True)


def test_unexpected_exception_becomes_an_error_outcome_without_traceback(tmp_path, monkeypatch):
    monkeypatch.setitem(
        tools.BUILTIN, "boom", Raising("boom", ZeroDivisionError("division by zero"))
    )
    outcome = call("boom", {}, tmp_path)
    assert outcome == tools.ToolOutcome(
        "tool boom failed: ZeroDivisionError: division by zero", True
    )
    assert "Traceback" not in outcome.content


def test_cancellation_propagates(tmp_path, monkeypatch):
    monkeypatch.setitem(tools.BUILTIN, "stop", Raising("stop", asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        call("stop", {}, tmp_path)


def test_session_without_work_dir(tmp_path):
    ctx = ToolContext(None, "s1", "r1")
    outcome = asyncio.run(tools.call("list_files", {}, ctx))
    assert outcome == tools.ToolOutcome(
        "this session has no work_dir; set one with PUT /sessions/{id}", True
    )
