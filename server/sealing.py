"""Sealing the server's secrets before they go into the database: a secret (32 bytes) is
XORed with an HMAC pad of a sealing key kept outside the database (a file beside it,
readable by its owner only), with a tag that tells a wrong sealing key. A copy of the
database alone holds no usable secret. The stream-token secret and every webhook endpoint's
signing secret are kept this way."""

from __future__ import annotations

import base64
import hmac
import os
import secrets

SECRET_BYTES = 32
_PAD = b"sessiond stream-token secret pad"
_TAG = b"sessiond stream-token secret tag"


def key_file_of(db: str) -> str:
    """Where a database's sealing key is kept unless the settings say (`--key-file`):
    `<db>.key` beside an SQLite file; for a PostgreSQL database, which several processes
    share, a file of the working directory's (each process must be given the same one)."""
    if db == ":memory:":
        return db
    if db.startswith(("postgresql://", "postgres://")):
        return "./data/sessiond-postgres.key"
    return db + ".key"


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
