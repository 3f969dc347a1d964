"""One serving process per database: an exclusive `flock` on `<db>.lock`, held for the
process's life.

A server repairs what a dead process left unfinished as it starts, so a second server on a
live database would interrupt the first one's runs and write into their event logs. The lock
is taken before the database is opened; the kernel lets go of it when the process dies, however
it dies, so a stale lock file never keeps a server from starting. Commands that only write
through SQLite (imports, keys, backups) need no lock: SQLite serialises their writes, and
they run no repair.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from server.store.kind import is_postgres


class DatabaseInUse(Exception):
    """Another live process serves this database."""


class DatabaseLock:
    def __init__(self, db: str) -> None:
        self.db = db
        self.path = Path(f"{db}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DatabaseLock:
        """Take the lock or raise DatabaseInUse naming the database and its holder."""
        if self._fd is not None or self.db == ":memory:" or is_postgres(self.db):
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DatabaseInUse(
                f"database {self.db} is in use by another sessiond ({holder}); stop it, "
                "or give this one another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor lets go of the flock
            self._fd = None


def _holder(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"
