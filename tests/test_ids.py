from __future__ import annotations

import time
from datetime import UTC, datetime

from server import ids


def decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + ids._CROCKFORD.index(char)
    return value


def test_ulids_are_26_crockford_characters_and_strictly_increasing() -> None:
    made = [ids.new_ulid() for _ in range(20_000)]
    assert all(len(u) == 26 and ids.is_ulid(u) for u in made)
    assert made == sorted(made) and len(set(made)) == len(made)


def test_ulid_carries_its_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ulid = ids.new_ulid()
    after = time.time_ns() // 1_000_000
    assert before <= decode(ulid) >> 80 <= after


def spelt(value: int, bits: int) -> str:
    return "".join(ids._CROCKFORD[(value >> s) & 31] for s in range(bits - 5, -1, -5))


def test_spelling_matches_the_bitwise_definition() -> None:
    for value in (0, 1, (1 << 80) - 1, 0x0123_4567_89AB_CDEF_FEDC):
        assert ids._spell80(value) == spelt(value, 80)
        assert ids._spell50(value) == spelt(value, 50)


def test_now_is_rfc3339_with_milliseconds_and_current() -> None:
    stamp = ids.now()
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert len(stamp) == 24 and stamp.endswith("Z")
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 1
    assert ids.now() >= stamp
