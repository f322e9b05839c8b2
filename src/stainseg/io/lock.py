"""An output-folder lock, so that two processes never write the same OUT at once."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

from stainseg.errors import StainsegError

LOCK_NAME = ".stainseg.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "stainseg") -> Iterator[Path]:
    """Hold ``folder/.stainseg.lock`` while the body runs.

    A second process gets a one-line error naming the holder. A lock left by a killed process
    (same host, pid gone) is taken over, so ``--resume`` after a crash just works.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()} {what}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid, *rest = lock.read_text().split()
            except (OSError, ValueError):
                host, pid, rest = "", "0", []
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process was killed
                continue
            raise StainsegError(
                f"another {' '.join(rest) or 'stainseg'} process (pid {pid} on {host or '?'}) is writing to this folder; "
                f"wait for it to finish or choose another -o (delete {LOCK_NAME} only if that process is gone)",
                folder,
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
