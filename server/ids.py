"""ULIDs and timestamps: the two kinds of value every stored row carries.

Every turn makes several of each, so both are cheap: a ULID is spelt two characters (ten
bits) per table lookup, its 10-character time prefix kept for the millisecond, its random
bytes read from `os.urandom` in blocks rather than one system call each; a timestamp is
formatted once per millisecond (its date and time once per second).
"""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits → two characters
_RAND_MAX = (1 << 80) - 1
_BLOCK = 4096  # random bytes fetched per system call: 409 ULIDs' worth

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_prefix = ""
_pool = b""
_pool_at = 0


def new_ulid() -> str:
    """A 26-character ULID; monotonic within one millisecond so ids sort by creation."""
    global _last_ms, _last_rand, _prefix
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            rand = _last_rand = (_last_rand + 1) & _RAND_MAX
        else:
            _last_ms, _prefix = ms, _spell50(ms)
            rand = _last_rand = int.from_bytes(_random(10), "big")
        return _prefix + _spell80(rand)


def _spell50(v: int) -> str:
    """The low 50 bits of `v` in Crockford base32 (the time prefix: a millisecond < 2^48)."""
    p = _PAIRS
    return (
        p[v >> 40 & 1023] + p[v >> 30 & 1023] + p[v >> 20 & 1023] + p[v >> 10 & 1023] + p[v & 1023]
    )


def _spell80(v: int) -> str:
    """The low 80 bits of `v` in Crockford base32 (the random part), unrolled: every id."""
    p = _PAIRS
    return (
        p[v >> 70 & 1023]
        + p[v >> 60 & 1023]
        + p[v >> 50 & 1023]
        + p[v >> 40 & 1023]
        + p[v >> 30 & 1023]
        + p[v >> 20 & 1023]
        + p[v >> 10 & 1023]
        + p[v & 1023]
    )


def _random(n: int) -> bytes:
    global _pool, _pool_at
    if _pool_at + n > len(_pool):
        _pool, _pool_at = os.urandom(_BLOCK), 0
    _pool_at += n
    return _pool[_pool_at - n : _pool_at]


def token_hex(nbytes: int) -> str:
    """`nbytes` random bytes in hex, from the same pool as the ULIDs: for ids that must not
    repeat (a request's), not for secrets, which come from `secrets`."""
    with _lock:
        return _random(nbytes).hex()


def _drop_pool() -> None:
    """A forked child must not hand out the random bytes its parent does."""
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_drop_pool)


def is_ulid(value: str) -> bool:
    return len(value) == 26 and all(c in _CROCKFORD for c in value.upper())


# (millisecond, its stamp) and (second, its text): one tuple each, so a thread reading one
# never sees a millisecond paired with another millisecond's text.
_stamp: tuple[int, str] = (-1, "")
_second: tuple[int, str] = (-1, "")


def now() -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T03:19:00.123Z."""
    global _stamp, _second
    ms = time.time_ns() // 1_000_000
    cached_ms, stamp = _stamp
    if ms == cached_ms:
        return stamp
    second, rest = divmod(ms, 1000)
    cached_second, text = _second
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    stamp = f"{text}.{rest:03d}Z"
    _stamp = (ms, stamp)
    return stamp


def stamp_of(seconds: int) -> str:
    """A unix time in seconds as `now()` writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def seconds_of(ulid: str) -> int:
    """The unix time (whole seconds) at which a ULID was made, read from its time prefix."""
    ms = 0
    for char in ulid[:10]:
        ms = ms * 32 + _CROCKFORD.index(char)
    return ms // 1000
