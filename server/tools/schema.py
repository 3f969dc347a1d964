"""A JSON Schema checker for the small subset the built-in tools use.

Supported: type (object, string, integer, number, boolean, array), properties, required,
additionalProperties: false, items, minimum, maximum, minLength. Anything else in a schema
is documentation for the model and is not checked. The answer is the first problem found,
naming the field, or None.
"""

from __future__ import annotations

from typing import Any

_ARTICLE = {
    "object": "an object",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
}


def problem(schema: dict[str, Any], value: Any, field: str = "") -> str | None:
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        return f"{_name(field)} must be {_ARTICLE.get(kind, kind)}, got {_type_of(value)}"
    if isinstance(value, dict):
        return _object_problem(schema, value, field)
    if isinstance(value, list):
        return _items_problem(schema, value, field)
    return _bounds_problem(schema, value, field)


def _object_problem(schema: dict[str, Any], value: dict[str, Any], field: str) -> str | None:
    properties: dict[str, Any] = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            return f"missing required field {_name(_join(field, key))}"
    if schema.get("additionalProperties") is False:
        for key in value:
            if key not in properties:
                allowed = ", ".join(properties) or "none"
                return f"unknown field {_name(_join(field, key))} (allowed: {allowed})"
    for key, sub in properties.items():
        if key in value and (found := problem(sub, value[key], _join(field, key))):
            return found
    return None


def _items_problem(schema: dict[str, Any], value: list[Any], field: str) -> str | None:
    items = schema.get("items")
    if items is None:
        return None
    for index, item in enumerate(value):
        if found := problem(items, item, f"{field}[{index}]"):
            return found
    return None


def _bounds_problem(schema: dict[str, Any], value: Any, field: str) -> str | None:
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        if schema["minLength"] == 1:
            return f"{_name(field)} must not be empty"
        return f"{_name(field)} must be at least {schema['minLength']} characters long"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if "minimum" in schema and value < schema["minimum"]:
        return f"{_name(field)} must be at least {schema['minimum']}, got {value}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{_name(field)} must be at most {schema['maximum']}, got {value}"
    return None


def _has_type(value: Any, kind: str) -> bool:
    match kind:
        case "object":
            return isinstance(value, dict)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "array":
            return isinstance(value, list)
        case "integer":
            # JSON Schema counts 3.0 as an integer; bool is an int to Python, not to JSON.
            return _is_number(value) and (isinstance(value, int) or value.is_integer())
        case "number":
            return _is_number(value)
        case _:
            return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_of(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
        case _:
            return type(value).__name__


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _name(field: str) -> str:
    return f"'{field}'" if field else "the input"
