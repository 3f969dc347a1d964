"""A tool's input is a msgspec Struct: it checks what a model sends and is the schema shown.

`schema` gives the Struct's JSON Schema as one flat object schema, the shape providers
take for a tool's parameters (they do not resolve `$ref`). `decode` converts a model's
input to the Struct, or raises Invalid with a message naming the field and saying what
it must be, in words a model can act on.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)

_ARTICLE = {
    "object": "an object",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
}
_JSON_TYPE = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_BOUND = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")
_TYPE = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_LENGTH = re.compile(r"Expected `str` of length (?P<op>>=|<=) (?P<n>\d+)")
_RANGE = re.compile(r"Expected `(?:int|float)` (?P<op>>=|<=|>|<) (?P<bound>\S+)")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class Invalid(ValueError):
    """The input does not fit the tool's Struct; str() says why."""


def schema(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The Struct's JSON Schema, inlined, with `type`, `properties` and `required` always
    present (OpenAI and Anthropic both want an object schema at the top); a copy to keep."""
    return copy.deepcopy(_schema(kind))


@cache
def _schema(kind: type[msgspec.Struct]) -> dict[str, Any]:
    found = msgspec.json.schema(kind)
    flat: dict[str, Any] = _inline(found, found.pop("$defs", {}))
    flat.pop("title", None)
    flat.pop("description", None)  # the tool's own description says what the input is for
    flat.setdefault("properties", {})
    flat.setdefault("required", [])
    return flat


def decode(kind: type[T], value: Any) -> T:
    try:
        return msgspec.convert(_integral(value), kind)
    except msgspec.ValidationError as exc:
        raise Invalid(_explain(str(exc), value, _schema(kind))) from None


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(ref := node.get("$ref"), str):
        rest = {key: value for key, value in node.items() if key != "$ref"}
        return _inline({**defs[ref.rsplit("/", 1)[-1]], **rest}, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _integral(value: Any) -> Any:
    """The value with integral floats as ints: JSON Schema counts 3.0 as an integer, and a
    model may send one; msgspec converts an int to a float where a number is wanted."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _explain(message: str, value: Any, shape: dict[str, Any]) -> str:
    """msgspec's message in the words of a JSON input: field names, JSON types, and what
    was sent; a message of a kind not known here is passed on as msgspec words it."""
    parts = _AT.match(message)
    assert parts is not None  # the pattern matches any text
    what, path = parts["what"], parts["at"] or ""
    at = path.removeprefix(".")
    if found := _MISSING.fullmatch(what):
        return f"missing required field {_name(_join(at, found['key']))}"
    if found := _UNKNOWN.fullmatch(what):
        allowed = ", ".join(_shape_at(shape, path).get("properties", {})) or "none"
        return f"unknown field {_name(_join(at, found['key']))} (allowed: {allowed})"
    if found := _TYPE.fullmatch(what):
        want = _ARTICLE.get(found["want"], f"of type {found['want']}")
        return f"{_name(at)} must be {want}, got {_JSON_TYPE.get(found['got'], found['got'])}"
    if found := _LENGTH.fullmatch(what):
        return _length_problem(at, found["op"], int(found["n"]))
    if found := _RANGE.fullmatch(what):
        bound = f"{float(found['bound']):g}"
        return f"{_name(at)} must be {_BOUND[found['op']]} {bound}, got {_value_at(value, path)}"
    return message


def _length_problem(at: str, op: str, n: int) -> str:
    if op == ">=" and n == 1:
        return f"{_name(at)} must not be empty"
    return f"{_name(at)} must be {_BOUND[op]} {n} characters long"


def _steps(path: str) -> list[str | int]:
    """`.o.xs[1]` as ["o", "xs", 1]."""
    return [key or int(index) for key, index in _STEP.findall(path)]


def _value_at(value: Any, path: str) -> Any:
    for step in _steps(path):
        value = value[step]
    return value


def _shape_at(shape: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema of the object or array at `path` (of an optional one: its non-null kind)."""
    for step in [*_steps(path), None]:
        inner = "items" if isinstance(step, int) else "properties"
        shape = next((one for one in shape.get("anyOf", ()) if inner in one), shape)
        if step is not None:
            shape = shape[inner][step]
    return shape


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _name(field: str) -> str:
    return f"'{field}'" if field else "the input"
