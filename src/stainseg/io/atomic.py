"""Write files so that a reader never sees a half-written one: temp file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from stainseg.errors import StainsegError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StainsegError(f"cannot create output folder ({exc.strerror}); choose a writable -o folder", folder) from None
    if not os.access(folder, os.W_OK):
        raise StainsegError("output folder is not writable; choose another -o folder or fix its permissions", folder)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    If the body raises (or the process dies), ``path`` is untouched and the temporary
    file is removed (or, after a kill, left as a hidden ``.tmp`` that readers ignore).

    Examples
    --------
    >>> with atomic_path(out / "labels.tif") as tmp:  # doctest: +SKIP
    ...     tifffile.imwrite(tmp, labels)
    """
    path = Path(path)
    _check_writable(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_path's mkstemp makes


def _remove_stale(folder: str | Path, pattern: re.Pattern, folders: bool) -> list[Path]:
    """Delete the entries of ``folder`` whose names match ``pattern`` (folders or files); returns them."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if not pattern.match(path.name):
                continue
            if folders and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif not folders and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the hidden temporaries (``.<name>.XXXXXXXX.tmp``) a killed writer left in ``folder``.

    Call it only while holding the folder's lock (:func:`stainseg.io.lock.folder_lock`), so that no
    live writer's temporary is removed. Returns the removed paths.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / ".labels.tif.a1b2c3d4.tmp").write_bytes(b"half")   # left by a killed writer
    >>> [p.name for p in remove_stale_temps(folder)]
    ['.labels.tif.a1b2c3d4.tmp']
    """
    return _remove_stale(folder, _TEMP_NAME, folders=False)


_TEMP_DIR = re.compile(r"^\..+\.\d+\.(tmpdir|old\.tmpdir)$")  # what staged_dir makes


@contextlib.contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary folder name beside ``path`` (the body creates it); on success it is renamed onto
    ``path`` (replacing it).

    On an error the temporary folder is removed and ``path`` is untouched; after a kill it stays
    behind as ``.<name>.<pid>.tmpdir``, which :func:`remove_stale_dirs` deletes.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "labels.zarr"
    >>> with staged_dir(target) as tmp:
    ...     tmp.mkdir()
    ...     _ = (tmp / "part").write_text("x")
    >>> sorted(p.name for p in target.parent.iterdir())
    ['labels.zarr']
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StainsegError(f"cannot create the output folder ({exc.strerror}); choose a writable -o folder", path.parent) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmpdir")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.{os.getpid()}.old.tmpdir")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_dirs(folder: str | Path) -> list[Path]:
    """Delete the hidden temporary folders a killed :func:`staged_dir` writer (a block-wise segmentation, an OME-Zarr
    plate) left in ``folder``; call it under the folder's lock.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / ".big.ome.zarr.4242.tmpdir").mkdir()
    >>> [p.name for p in remove_stale_dirs(folder)]
    ['.big.ome.zarr.4242.tmpdir']
    """
    return _remove_stale(folder, _TEMP_DIR, folders=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_text(path, "done")
    >>> path.read_text()
    'done'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (numpy scalars and paths become plain values).

    Examples
    --------
    >>> import json, tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "facts.json"
    >>> write_json(path, {"objects": np.int64(12), "area": np.array([1.5, 2.0])})
    >>> json.loads(path.read_text())
    {'objects': 12, 'area': [1.5, 2.0]}
    """
    write_text(path, json.dumps(data, indent=2, default=_json_default, sort_keys=False) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write a list of dicts as CSV atomically; ``columns`` fixes the column order.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "cells.csv"
    >>> write_csv(path, [{"label": 1, "area": 40}, {"label": 2, "area": 35}])
    >>> path.read_text().splitlines()
    ['label,area', '1,40', '2,35']
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv` into a list of dicts (values are strings).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "cells.csv"
    >>> write_csv(path, [{"label": 1, "area": 40}])
    >>> read_csv(path)                               # values come back as strings
    [{'label': '1', 'area': '40'}]
    """
    path = Path(path)
    if not path.is_file():
        raise StainsegError("file not found; run the stage that writes it first", path)
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
