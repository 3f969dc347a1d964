"""Stream tokens: what a browser's `EventSource`, which cannot send headers, carries in the
URL instead of a key. A token opens one stream — a run's events, or a session's channel —
for its tenant until it expires:

    st1~<tenant>~<key id>~<expiry, unix seconds>~<signature>

The signature is an HMAC-SHA256 of all of that and of the session and run it opens (the run
empty for a session's channel), under a secret of the server's. A token for another stream,
expired or altered in any character is refused. The key id is the key that asked for it:
the stream counts against that key's open streams.

The secret is made once and kept in the database, so that every process on it and every
restart accept the same tokens, but sealed: XORed with an HMAC pad of a sealing key that is
kept outside the database (a file beside it, readable by its owner only), with a tag that
tells a wrong sealing key. A copy of the database alone holds no usable secret. If the
sealing key changed, a new secret is made: tokens given out before stop working, which
their short life makes cheap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable

import msgspec
from starlette.requests import Request

from server.ids import now
from server.models import ApiKey
from server.store import SecretStore, is_postgres

log = logging.getLogger("sessiond.tokens")

VERSION = "st1"
SEP = "~"  # in no tenant name, key id or number
SECRET_NAME = "stream_tokens"
_PAD = b"sessiond stream-token secret pad"
_TAG = b"sessiond stream-token secret tag"
RUN_EVENTS = re.compile(r"^/sessions/([^/]+)/runs/([^/]+)/events$")
SESSION_EVENTS = re.compile(r"^/sessions/([^/]+)/events$")


class Claims(msgspec.Struct):
    tenant: str
    key_id: str
    expires: int  # unix seconds


def key_file_of(db: str) -> str:
    """Where a database's sealing key is kept unless the settings say: `<db>.key` beside an
    SQLite file; for a PostgreSQL database, which several processes share, a file of the
    working directory's (each process needs the same one: see `key_file`)."""
    if db == ":memory:":
        return db
    return "./data/sessiond-postgres.key" if is_postgres(db) else db + ".key"


def sealing_key(path: str) -> bytes:
    """The sealing key in the file `path` (see `key_file_of`), made (owner-only) the first
    time. An in-memory database gets one that lives as long as it does."""
    if path == ":memory:":
        return secrets.token_bytes(32)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    with open(path) as kept:
        text = kept.read().strip()
    try:
        key = base64.urlsafe_b64decode(text.encode())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RuntimeError(f"{path} does not hold a sealing key; move it away to make a new one")
    return key


def seal(secret: bytes, sealing_key: bytes) -> str:
    nonce = secrets.token_bytes(16)
    pad = hmac.digest(sealing_key, _PAD + nonce, "sha256")
    body = bytes(a ^ b for a, b in zip(secret, pad, strict=True))
    tag = hmac.digest(sealing_key, _TAG + nonce + body, "sha256")[:16]
    return base64.urlsafe_b64encode(nonce + body + tag).decode()


def unseal(sealed: str, sealing_key: bytes) -> bytes | None:
    """The secret; None when the sealing key is not the one that sealed it."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
    except ValueError:
        return None
    if len(raw) != 16 + 32 + 16:
        return None
    nonce, body, tag = raw[:16], raw[16:48], raw[48:]
    if not hmac.compare_digest(tag, hmac.digest(sealing_key, _TAG + nonce + body, "sha256")[:16]):
        return None
    pad = hmac.digest(sealing_key, _PAD + nonce, "sha256")
    return bytes(a ^ b for a, b in zip(body, pad, strict=True))


async def load_secret(store: SecretStore, sealing_key: bytes) -> bytes:
    """The stream-token secret of this database, made on first use."""
    made = secrets.token_bytes(32)
    kept = await store.keep(SECRET_NAME, seal(made, sealing_key), now())
    secret = unseal(kept, sealing_key)
    if secret is None:
        log.warning(
            "the stream-token secret was sealed with another sealing key: made a new one "
            "(stream tokens given out before are no longer accepted)"
        )
        await store.replace(SECRET_NAME, seal(made, sealing_key), now())
        secret = made
    return secret


class StreamTokens:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    def mint(self, tenant: str, key_id: str, session_id: str, run_id: str = "") -> tuple[str, int]:
        """A token for the session's channel (no run) or one run's events, and its expiry."""
        expires = int(self.clock() + self.ttl_s)
        head = SEP.join((VERSION, tenant, key_id, str(expires)))
        return f"{head}{SEP}{self._sign(head, session_id, run_id)}", expires

    def check(self, token: str, path: str) -> Claims | None:
        """What the token grants on this path; None if it grants nothing there."""
        stream = _stream_of(path)
        parts = token.split(SEP)
        if stream is None or len(parts) != 5 or parts[0] != VERSION or not parts[3].isdigit():
            return None
        head = SEP.join(parts[:4])
        if not hmac.compare_digest(parts[4], self._sign(head, *stream)):
            return None
        expires = int(parts[3])
        if expires <= self.clock():
            return None
        return Claims(parts[1], parts[2], expires)

    def _sign(self, head: str, session_id: str, run_id: str) -> str:
        message = "\n".join((head, session_id, run_id)).encode()
        mac = hmac.digest(self.secret, message, hashlib.sha256)
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _stream_of(path: str) -> tuple[str, str] | None:
    """The (session, run) a stream path names; the run empty for a session's channel."""
    found = RUN_EVENTS.match(path)
    if found is not None:
        return found.group(1), found.group(2)
    found = SESSION_EVENTS.match(path)
    if found is not None:
        return found.group(1), ""
    return None


def carried_token(query_string: bytes) -> str | None:
    """The `token` query parameter of a request, if any."""
    values = urllib.parse.parse_qs(query_string.decode("latin-1")).get("token")
    return values[0] if values else None


def events_url(request: Request, session_id: str, run_id: str = "") -> tuple[str, int | None]:
    """The URL of a run's events (or, with no run, of the session's channel) for a browser:
    with auth on it carries a stream token of the request's key. Also the token's expiry."""
    path = (
        f"/sessions/{session_id}/runs/{run_id}/events"
        if run_id
        else (f"/sessions/{session_id}/events")
    )
    key: ApiKey | None = request.scope.get("state", {}).get("key")
    tokens: StreamTokens | None = getattr(request.app.state, "tokens", None)
    if key is None or tokens is None:
        return path, None
    token, expires = tokens.mint(key.tenant, key.id, session_id, run_id)
    return f"{path}?token={urllib.parse.quote(token, safe='~')}", expires
