"""Standard Webhooks signatures. A secret is `whsec_` and the base64 of 32 random bytes; an
attempt's headers are `webhook-id` (the same on every attempt at one event),
`webhook-timestamp` (unix seconds, of the attempt) and `webhook-signature`: `v1,` and the
base64 of the HMAC-SHA256, under the secret's bytes, of `<id>.<timestamp>.<body>`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from server.sealing import SECRET_BYTES

PREFIX = "whsec_"


def new_secret() -> tuple[str, bytes]:
    """A fresh endpoint secret: as shown to its owner once, and its bytes (to seal)."""
    raw = secrets.token_bytes(SECRET_BYTES)
    return shown(raw), raw


def shown(raw: bytes) -> str:
    return PREFIX + base64.b64encode(raw).decode()


def signature(raw: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(raw, signed, hashlib.sha256)).decode()


def headers(raw: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(raw, msg_id, timestamp, body),
        "content-type": "application/json",
    }
