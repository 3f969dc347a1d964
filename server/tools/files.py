"""Opening a file the one way every tool does: without blocking, without following a
symlink, and only when it is a regular file with a single name.

Each rule closes a hole a model could use from inside the work_dir. Opening a FIFO blocks
until someone opens its other end, which would keep a tool thread forever; O_NONBLOCK makes
that open return at once. A device node is no file to read or write (writing /dev/sda...),
so it is refused, by what fstat says of the opened descriptor, which no rename between a
check and the open can change. A hard link is the same file under a second name that may
lie outside the work_dir (a link to ~/.ssh/id_rsa made by run_command), and nothing tells
where: a file with more than one link is refused. O_NOFOLLOW refuses a final symlink, which
resolve() in paths.py has already followed and checked, so one there now was swapped in.
"""

from __future__ import annotations

import errno
import os
import stat

from server.errors import ToolError

FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE_MODE = 0o666  # less the umask, as open() gives
_ATTEMPTS = 3

_KINDS = {
    stat.S_IFIFO: "a named pipe, a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def open_regular(real: str, path: str, flags: int) -> int:
    """A descriptor (opened with `flags`) on the regular file `real`, or ToolError/OSError.

    `real` is what paths.resolve() made of `path`, which names it in messages.
    """
    # Refusing what lstat shows first spares opening a device at all, which can have effects.
    check(os.lstat(real), path)
    try:
        fd = os.open(real, flags | FLAGS)
    except OSError as exc:
        raise _open_error(path, exc) from exc
    try:
        check(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_write(real: str, path: str) -> tuple[int, bool]:
    """A descriptor to write `real` with, nothing truncated yet; and whether it existed."""
    for _ in range(_ATTEMPTS):
        try:
            return open_regular(real, path, os.O_WRONLY), True
        except FileNotFoundError:
            pass
        try:
            # O_EXCL: never through a symlink or onto a node made since the lstat above.
            return os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FLAGS, NEW_FILE_MODE), False
        except FileExistsError:
            continue
    raise ToolError(f"{path!r} keeps appearing and disappearing; try again")


def check(status: os.stat_result, path: str) -> None:
    """ToolError (or IsADirectoryError) unless `status` is a regular file's with one link."""
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "of an unknown kind")
        raise ToolError(
            f"{path!r} is not a regular file (it is {kind}); file tools only read and write "
            "regular files"
        )
    if status.st_nlink > 1:
        raise ToolError(
            f"{path!r} has {status.st_nlink} hard links: the same file has another name, which "
            "may be outside the working directory, so file tools do not open it"
        )


def _open_error(path: str, exc: OSError) -> OSError | ToolError:
    if exc.errno == errno.ELOOP:
        return ToolError(f"{path!r} became a symbolic link while it was being opened; try again")
    if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader, since the lstat
        return ToolError(f"{path!r} is not a regular file (it is {_KINDS[stat.S_IFIFO]})")
    return exc
