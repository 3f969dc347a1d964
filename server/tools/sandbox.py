"""How run_command starts its shell: inside bubblewrap where the machine has it, else (only
when the operator allows it) as a plain child process.

The sandbox sees the session's work_dir read-write, the system's programs and libraries
read-only, a few files of /etc, a fresh /proc, /dev and /tmp, and nothing else: no home
folder, no server files, no network, no other process. bwrap itself is started with the
clean environment too, because inside the sandbox it is the shell's parent, and
/proc/$PPID/environ shows the environment a process was started with.

Either way the command dies with the server: bwrap's --die-with-parent kills the sandbox
(and so every process in its pid namespace) when the server goes; the unsandboxed shell
runs under a small sh wrapper that gets SIGTERM when the server dies (PR_SET_PDEATHSIG)
and then kills its whole process group.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
from collections.abc import Callable

from server.errors import ToolError

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PACKAGE = "bubblewrap"
# What of /etc a shell command needs: user and group names, the dynamic linker's cache,
# Debian's /etc/alternatives links (awk, editor, ...), the time zone, localhost.
ETC = (
    "alternatives",
    "group",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "passwd",
    "protocols",
    "services",
    "timezone",
)
# Top-level folders of the system that hold programs and libraries (links into /usr on
# merged-/usr systems).
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PR_SET_PDEATHSIG = 1
# The shell runs in the background so that `wait` (which a trapped signal interrupts,
# unlike a foreground command) is what the wrapper waits in.
_WRAPPER = 'trap "kill -s KILL 0" TERM HUP; /bin/sh -c "$1" & wait $! 2>/dev/null'


def clean_env(home: str) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb"}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def sandboxed(bwrap: str, root: str, command: str, hidden: tuple[str, ...] = ()) -> list[str]:
    """The bwrap command line that runs `command` with /bin/sh in `root`."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for name in SYSTEM:
        path = f"/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/var/tmp"]
    argv += ["--bind", root, root, *_hide(root, hidden), "--chdir", root]
    return [*argv, "--", "/bin/sh", "-c", command]


def _hide(root: str, hidden: tuple[str, ...]) -> list[str]:
    """Mounts that cover the server's own files (its database) where they lie inside the
    work_dir: their folder gets an empty tmpfs, or, when that folder is the work_dir
    itself, each file is covered by an empty one."""
    argv: list[str] = []
    for path in hidden:
        real = os.path.realpath(path)
        if not os.path.isfile(real):
            continue
        folder = os.path.dirname(real)
        if folder != root and _inside(root, folder):
            argv += ["--tmpfs", folder]
        elif folder == root:
            for name in (real, *(real + end for end in ("-wal", "-shm", "-journal"))):
                if os.path.isfile(name):
                    argv += ["--ro-bind", "/dev/null", name]
    return argv


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def unsandboxed(command: str) -> list[str]:
    return ["/bin/sh", "-c", _WRAPPER, "sessiond-command", command]


def die_with_server() -> Callable[[], None]:
    """A preexec function: the child gets SIGTERM when the server (its parent) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the server died before the signal was set up
            os._exit(1)

    return preexec


def missing() -> ToolError:
    return ToolError(
        "run_command needs bubblewrap (the bwrap program; Debian package "
        f"{PACKAGE!r}) to confine commands, and this server does not have it; its operator "
        "can install it, or start the server with --allow-unsandboxed-commands"
    )


def failed(output: str) -> ToolError:
    return ToolError(
        "the sandbox (bubblewrap) could not start here, so the command did not run; "
        f"bwrap said: {output.strip() or '(nothing)'}"
    )
