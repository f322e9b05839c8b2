"""An output-folder lock, so that two processes never write the same OUT at once."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from stainseg.errors import StainsegError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".stainseg.lock"


def _holder(fd: int) -> tuple[str, str, str]:
    """(host, pid, what) written in a lock file by its holder ('?' where unknown)."""
    try:
        host, pid, *rest = os.pread(fd, 4096, 0).decode(errors="replace").split()
    except (OSError, ValueError):
        return "?", "?", "stainseg"
    return host, pid, " ".join(rest) or "stainseg"


def _refuse(folder: Path, host: str, pid: str, what: str) -> StainsegError:
    return StainsegError(
        f"another {what} process (pid {pid} on {host}) is writing to this folder; "
        f"wait for it to finish or choose another -o (delete {LOCK_NAME} only if that process is gone)",
        folder,
    )


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "stainseg") -> Iterator[Path]:
    """Hold ``folder/.stainseg.lock`` while the body runs.

    A second process gets a one-line error naming the holder. The lock is an OS file lock
    (``flock``) on that file, which the kernel releases when its process dies, so a lock file
    left by a killed run is free at once and ``--resume`` after a crash just works (no pid
    guessing, no race between two processes taking over the same stale lock).

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> with folder_lock(out, "segment") as lock:
    ...     lock.name
    '.stainseg.lock'
    """
    from stainseg.io.atomic import _check_writable

    folder = Path(folder)
    _check_writable(folder)
    lock = folder / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()} {what}"
    if fcntl is None:  # pragma: no cover - no flock (Windows): create-exclusive, no takeover
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            fd = os.open(lock, os.O_RDONLY)
            try:
                raise _refuse(folder, *_holder(fd)) from None
            finally:
                os.close(fd)
    else:
        for _ in range(100):
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live process
                holder = _holder(fd)
                os.close(fd)
                raise _refuse(folder, *holder) from None
            try:
                current = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # its holder removed the file between our open and flock: try the new one
        else:  # pragma: no cover
            raise StainsegError(f"cannot take {LOCK_NAME}; retry, or choose another -o", folder)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # before releasing, so a waiter never holds a removed file
        os.close(fd)
