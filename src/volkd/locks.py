"""One writer per output folder: an advisory lock held by the command's coordinating process.

``volkd import``, ``volkd run`` and ``volkd train-*`` take the lock of their output folder before
writing anything; a second command on the same folder is refused at once with the holder's pid.
The lock is ``fcntl.flock`` on a hidden sibling file ``.<name>.lock`` (the folder itself may not
exist yet, and ``--force`` replaces it): the operating system releases it when the holder exits,
however it exits, so the lock of a killed process is simply taken over by the next command. The
file holds the holder's pid, host, command and start time, for the refusal message; it is
removed on release (a killed holder leaves it behind, stale, until the next command).

Only the coordinating process locks: the trials of a study (local, Ray tasks, worker processes)
write inside the folder their coordinator holds, and never take the lock themselves.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from volkd.errors import LockedError
from volkd.provenance import command_line

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock
    fcntl = None  # type: ignore[assignment]

#: errno values of a file system without flock support (some network file systems).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_path(out: str | Path) -> Path:
    """The lock file of output ``out``: ``<parent>/.<name>.lock``."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def lock_holder(out: str | Path) -> dict[str, Any]:
    """What the lock file of ``out`` says about its (last) holder (empty when nothing is recorded)."""
    try:
        return json.loads(lock_path(out).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class OutputLock:
    """The exclusive lock of one output folder; use :func:`output_lock`."""

    def __init__(self, out: str | Path, command: str | None = None) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self.command = command or command_line()
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock now or raise :class:`LockedError` naming the holder (never waits)."""
        if fcntl is None:  # pragma: no cover
            warnings.warn(f"{self.out}: output locking needs fcntl (POSIX); this folder is not locked", stacklevel=2)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(self._refusal()) from None
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_LOCKS:
                    warnings.warn(f"{self.out}: the file system does not support locks ({e.strerror}); this folder is "
                                  "not locked against a second volkd command", stacklevel=2)
                    return self
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released and removed this file between our open and our lock: try again
        else:  # pragma: no cover - ten releases in a row
            raise LockedError(self._refusal())
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def _refusal(self) -> str:
        h = lock_holder(self.out)
        for _ in range(5):  # the holder may have the lock but not yet its record
            if h:
                break
            time.sleep(0.02)
            h = lock_holder(self.out)
        who = f"pid {h.get('pid', '?')}" + (f" on {h['host']}" if h.get("host") else "")
        what = f" (`{h['command']}`, since {h.get('since_utc', '?')})" if h.get("command") else ""
        return (f"{self.out}: another volkd process is writing this folder: {who}{what}; wait for it to finish, "
                f"stop it, or choose another output")

    def release(self) -> None:
        """Release the lock and remove its file (removed while still held: a process that opened the
        old file meanwhile sees it is gone and starts over)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        if _same_file(fd, self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)  # type: ignore[union-attr]
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


@contextlib.contextmanager
def output_lock(out: str | Path, command: str | None = None) -> Iterator[OutputLock]:
    """Hold the lock of output folder ``out`` for the ``with`` block (see the module docstring)."""
    lock = OutputLock(out, command).acquire()
    try:
        yield lock
    finally:
        lock.release()
