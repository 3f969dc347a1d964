"""Counting SQLite commits from outside the server, by reading its write-ahead log.

WAL format (sqlite.org/fileformat.html#the_write_ahead_log): a 32-byte header (magic, format
version, page size, checkpoint sequence, salt-1, salt-2, two checksums; big-endian), then
frames of a 24-byte header plus one page. Frame header bytes 0..4: page number; 4..8: for a
commit frame, the database size in pages after the commit, otherwise 0; 8..16: the salts,
equal to the header's for every frame of the current WAL generation. So the commits in the
log are the frames whose salts match the header and whose bytes 4..8 are non-zero: exactly
one per transaction that changed a page (an empty BEGIN … COMMIT writes no frame).

A WAL is rewound (the next writer starts over at frame 0, with new salts) once a checkpoint
has copied all of it and no reader is using it, which would lose frames we have not read.
`Watch` therefore checkpoints with TRUNCATE first (an empty log), waits for the workload's
first commit, and then holds a read transaction open: a reader with a snapshot inside the
WAL blocks the rewind, so the log only grows until `stop()`. A salt change between start and
stop (the rewind happened anyway) is reported as an unreliable count.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24


class Log:
    __slots__ = ("commits", "frames", "salts")

    def __init__(self, salts: bytes, frames: int, commits: int) -> None:
        self.salts = salts
        self.frames = frames
        self.commits = commits


def read(path: Path) -> Log:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Log(b"", 0, 0)
    if len(data) < HEADER:
        return Log(b"", 0, 0)
    (page_size,) = struct.unpack(">I", data[8:12])
    salts = data[16:24]
    frames = commits = 0
    step = FRAME_HEADER + page_size
    for offset in range(HEADER, len(data) - step + 1, step):
        if data[offset + 8 : offset + 16] != salts:
            break  # a frame of an older generation: the valid log ends here
        frames += 1
        if data[offset + 4 : offset + 8] != b"\0\0\0\0":
            commits += 1
    return Log(salts, frames, commits)


def checkpoint(db: Path) -> None:
    """Copy the WAL into the database and truncate it to zero bytes."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy:
        raise RuntimeError("wal_checkpoint(TRUNCATE) was blocked: is a run still writing?")


def database_bytes(db: Path) -> int:
    checkpoint(db)
    return db.stat().st_size


class Watch:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = Path(f"{db}-wal")
        self.reader: sqlite3.Connection | None = None
        self.salts = b""
        self._pin: asyncio.Task[None] | None = None

    def start(self) -> None:
        checkpoint(self.db)
        self._pin = asyncio.create_task(self._hold())

    async def _hold(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = read(self.path)
            if log.commits:
                reader = sqlite3.connect(self.db, isolation_level=None)
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self.reader, self.salts = reader, log.salts
                return
            await asyncio.sleep(0.001)

    async def stop(self, settle_s: float = 0.3) -> tuple[int, bool]:
        """(commits since start, whether the count is reliable)."""
        await asyncio.sleep(settle_s)  # let buffered events reach their commit
        if self._pin is not None and not self._pin.done():
            self._pin.cancel()
        log = read(self.path)
        if self.reader is not None:
            self.reader.execute("ROLLBACK")
            self.reader.close()
            self.reader = None
        reliable = not self.salts or log.salts == self.salts
        return log.commits, reliable
