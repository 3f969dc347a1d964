"""Opaque cursors for keyset pagination: stable under concurrent inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from server.errors import InvalidRequest

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50


def encode_cursor(*key: Any) -> str:
    raw = msgspec.json.encode(list(key))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequest("cursor is not one this server issued", field="cursor") from exc
    if not isinstance(key, list) or len(key) != arity or not all(map(_scalar, key)):
        raise InvalidRequest("cursor is not one this server issued", field="cursor")
    return key


def _scalar(value: Any) -> bool:
    """Cursor keys are strings or numbers SQLite can bind."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str | float)
