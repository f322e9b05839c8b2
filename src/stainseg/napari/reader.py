"""napari reader for stainseg outputs: ``OUT/`` of ``stainseg segment`` or ``stainseg groundtruth``,
its ``index.csv``, or one ``OUT/labels/<name>.tif``; each label image becomes a Labels layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from stainseg.errors import StainsegError

__all__ = ["get_reader", "label_files", "read_stainseg"]

LayerData = tuple[Any, dict[str, Any], str]
PathLike = Union[str, Path]


def label_files(path: PathLike) -> list[Path]:
    """The label images a path stands for (empty when it is not a stainseg output).

    Parameters
    ----------
    path : str or Path
        An output folder with ``labels/`` and ``index.csv``, that ``index.csv``, or a
        ``.tif`` inside a ``labels/`` folder.
    """
    path = Path(path)
    if path.is_dir() and (path / "labels").is_dir() and (path / "index.csv").is_file():
        folder = path / "labels"
    elif path.name == "index.csv" and (path.parent / "labels").is_dir():
        folder = path.parent / "labels"
    elif path.suffix.lower() in (".tif", ".tiff") and path.parent.name == "labels" and path.is_file():
        return [path]
    else:
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith("."))


def read_stainseg(paths: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read stainseg label outputs as napari layer data: one Labels layer per label image."""
    from stainseg.io.images import read_labels

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    layers: list[LayerData] = []
    for item in items:
        files = label_files(item)
        if not files:
            raise StainsegError("is not a stainseg output (a folder with labels/ and index.csv, its index.csv, or labels/NAME.tif)", item)
        for file in files:
            layers.append((read_labels(file), {"name": file.name.split(".")[0], "metadata": {"source": str(file)}}, "labels"))
    return layers


def get_reader(path: PathLike | Sequence[PathLike]) -> Optional[Callable[..., list[LayerData]]]:
    """npe2 reader hook: :func:`read_stainseg` when every path is a stainseg output, else None."""
    items = [path] if isinstance(path, (str, Path)) else list(path)
    if items and all(label_files(p) for p in items):
        return read_stainseg
    return None
