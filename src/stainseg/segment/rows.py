"""Read a huge image a band of rows at a time: TIFF, zarr / OME-Zarr or an array, as lazy (C, Y, X) rows.

The block-wise segmentation (:mod:`stainseg.segment.blockwise`) never holds a whole plane of a
huge image: it asks an :class:`ImageRows` for rows ``[y0, y1)`` of every input plane.

- An uncompressed TIFF whose pixels lie contiguously in the file (what ``tifffile.imwrite`` and most
  microscopes write) is read with plain file reads at the rows' byte offset: no memory map, so the
  pages read do not stay in the process's resident memory.
- Any other TIFF (compressed, tiled, striped) is read through ``tifffile``'s zarr store
  (``TiffFile.series[0].aszarr()``): only the strips or tiles that hold the rows are decoded.
- A zarr array, or an OME-Zarr image (its first ``multiscales`` level), through zarr slicing.
- One file per input plane (an image set of several channels) is one plane from each.

Axes: (Y, X) for one plane, (C, Y, X), or (Y, X, C) with ``C <= 4``; leading axes of length 1 (T, Z of
an OME-Zarr) are dropped. Anything else is a one-line :class:`StainsegError` naming the file.

Examples
--------
>>> import tempfile, tifffile
>>> path = tempfile.mkdtemp() + "/big.tif"
>>> tifffile.imwrite(path, np.arange(2 * 6 * 5, dtype=np.uint16).reshape(2, 6, 5))
>>> with open_rows(path, 2) as rows:
...     rows.shape, rows.rows(2, 4).shape, int(rows.rows(2, 4)[1, 0, 0])
((2, 6, 5), (2, 2, 5), 40)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["ImageRows", "open_rows", "image_plane_shape", "is_zarr"]

RowReader = Callable[[int, int], np.ndarray]
"""``read(y0, y1) -> (n_planes, y1 - y0, X)`` array of a source."""


def is_zarr(path: str | Path) -> bool:
    """True for a zarr array or group folder (zarr v2 or v3), e.g. ``image.zarr`` or ``plate.ome.zarr``.

    Examples
    --------
    >>> import tempfile
    >>> is_zarr(tempfile.mkdtemp())
    False
    """
    path = Path(path)
    return path.is_dir() and any((path / marker).exists() for marker in (".zarray", ".zgroup", "zarr.json"))


class ImageRows:
    """Lazy (C, Y, X) rows of one or more image sources; ``rows(y0, y1)`` reads only those rows.

    Build it with :func:`open_rows`; close it (or use ``with``) to release the files.

    Attributes
    ----------
    shape : (C, Y, X)
    dtype : numpy dtype of the stored pixels
    where : str
        The file(s), for error messages.
    """

    def __init__(self, readers: Sequence[tuple[int, RowReader]], shape_yx: tuple[int, int], dtype: np.dtype, where: str,
                 closers: Sequence[Callable[[], None]] = ()) -> None:
        self._readers = list(readers)
        self.shape = (sum(n for n, _ in self._readers), int(shape_yx[0]), int(shape_yx[1]))
        self.dtype = np.dtype(dtype)
        self.where = where
        self._closers = list(closers)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of every plane, (C, y1 - y0, X), in the stored dtype (native byte order)."""
        y0, y1 = max(0, int(y0)), min(self.shape[1], int(y1))
        parts = [np.asarray(read(y0, y1)) for _, read in self._readers]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return out.astype(out.dtype.newbyteorder("="), copy=False)

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A (C, y1 - y0, x1 - x0) window (reads the whole width of its rows)."""
        return np.ascontiguousarray(self.rows(y0, y1)[:, :, x0:x1])

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []

    def __enter__(self) -> "ImageRows":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c, y, x = self.shape
        return f"ImageRows({c} x {y} x {x} {self.dtype.name}, {self.where})"


def _layout(shape: Sequence[int], n_channels: Optional[int], where: Any) -> tuple[tuple[int, ...], str]:
    """How a stored shape maps to (C, Y, X): the shape without its length-1 axes, and ``"yx"``, ``"cyx"`` or ``"yxc"``."""
    shape = tuple(int(s) for s in shape)
    kept = tuple(s for s in shape if s != 1)
    if len(kept) < 2:
        raise StainsegError(f"image has shape {shape}; too small to segment", where)
    if len(kept) == 2:
        return kept, "yx"
    if len(kept) == 3:
        if kept[-1] <= 4 and n_channels == kept[-1] and kept[0] != n_channels:
            return kept, "yxc"
        if n_channels in (None, kept[0]) and not (n_channels is None and kept[-1] in (3, 4) and kept[0] > 4):
            return kept, "cyx"
        if kept[-1] <= 4 and n_channels in (None, kept[-1]):
            return kept, "yxc"
    want = f"the model's {n_channels} input plane(s)" if n_channels else "(Y, X) or (C, Y, X)"
    raise StainsegError(f"image has shape {shape}, which is not {want}; give a 2-D plane or a stack of the model's input "
                        "channels in order (see MODEL/model.json)", where)


def _planes(kept: tuple[int, ...], layout: str) -> tuple[int, tuple[int, int]]:
    """(number of planes, (Y, X)) of a squeezed shape."""
    if layout == "yx":
        return 1, (kept[0], kept[1])
    if layout == "cyx":
        return kept[0], (kept[1], kept[2])
    return kept[2], (kept[0], kept[1])


def _array_reader(array: Any, shape: tuple[int, ...], kept: tuple[int, ...], layout: str) -> RowReader:
    """Rows of an array-like (numpy, zarr) of ``shape``: length-1 axes are indexed away, the rest is ``layout``."""
    positions = [i for i, s in enumerate(shape) if s != 1]
    y_axis = positions[1] if layout == "cyx" else positions[0]

    def read(y0: int, y1: int) -> np.ndarray:
        key: list[Any] = [slice(None) if s != 1 else 0 for s in shape]
        key[y_axis] = slice(y0, y1)
        block = np.asarray(array[tuple(key)])
        if layout == "yx":
            return block[None]
        return block if layout == "cyx" else np.moveaxis(block, -1, 0)
    return read


def _contiguous_tiff_reader(path: Path, offset: int, kept: tuple[int, ...], dtype: np.dtype, layout: str) -> RowReader:
    """Rows of an uncompressed, contiguous TIFF series by plain reads at their byte offset (no memory map).

    Length-1 axes do not change where a pixel lies, so the squeezed shape ``kept`` describes the data."""
    itemsize = dtype.itemsize

    def read_span(start: int, count: int) -> np.ndarray:
        with open(path, "rb") as fh:
            fh.seek(offset + start * itemsize)
            data = np.fromfile(fh, dtype=dtype, count=count)
        if data.size != count:
            raise StainsegError("the TIFF ends before its pixel data does (truncated file); re-export it", path)
        return data

    if layout == "cyx":
        planes, height, width = kept

        def read(y0: int, y1: int) -> np.ndarray:
            out = np.empty((planes, y1 - y0, width), dtype)
            for c in range(planes):
                out[c] = read_span((c * height + y0) * width, (y1 - y0) * width).reshape(y1 - y0, width)
            return out
        return read

    row = int(np.prod(kept[1:]))

    def read_rows(y0: int, y1: int) -> np.ndarray:
        block = read_span(y0 * row, (y1 - y0) * row).reshape((y1 - y0,) + tuple(kept[1:]))
        return block[None] if layout == "yx" else np.moveaxis(block, -1, 0)
    return read_rows


def _open_one(path: Path, n_channels: Optional[int]) -> tuple[RowReader, int, tuple[int, int], np.dtype, list[Callable[[], None]]]:
    """(reader, planes, (Y, X), dtype, closers) of one file or zarr."""
    if not path.exists():
        raise StainsegError("file not found; check the path", path)
    if is_zarr(path):
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
            if not hasattr(node, "shape"):  # a group: an OME-Zarr image's first level, or an array "0"
                multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
                key = multiscales[0]["datasets"][0]["path"] if multiscales else "0"
                node = node[key]
        except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
            raise StainsegError(f"is a zarr group without an image array ({exc}); give the array or an OME-Zarr image", path) from None
        kept, layout = _layout(node.shape, n_channels, path)
        planes, yx = _planes(kept, layout)
        return _array_reader(node, tuple(node.shape), kept, layout), planes, yx, np.dtype(node.dtype), []
    import tifffile

    from stainseg.io.images import _quiet_readers, _sniff

    kind = _sniff(path)
    if kind != "tiff":
        raise StainsegError(f"is a {kind.upper()} file; block-wise segmentation reads TIFF or zarr, convert it", path)
    tif = None
    try:
        with _quiet_readers():  # what is wrong with a file is reported once, as the one-line error
            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype).newbyteorder(tif.byteorder)
        kept, layout = _layout(shape, n_channels, path)
        planes, yx = _planes(kept, layout)
        if series.dataoffset is not None:
            tif.close()
            return _contiguous_tiff_reader(path, int(series.dataoffset), kept, dtype, layout), planes, yx, dtype, []
        import zarr

        store = series.aszarr()
        array = zarr.open(store, mode="r")
        return _array_reader(array, shape, kept, layout), planes, yx, dtype, [store.close, tif.close]
    except Exception as exc:  # corrupt files raise many kinds of errors
        if tif is not None:
            tif.close()
        if isinstance(exc, StainsegError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StainsegError(f"cannot read TIFF ({reason}); the file is corrupt or truncated, re-export it", path) from None


def open_rows(image: Any, n_channels: Optional[int] = None) -> ImageRows:
    """A lazy (C, Y, X) row reader of a TIFF, a zarr / OME-Zarr, a list of one file per plane, or an array.

    Parameters
    ----------
    image : str, Path, sequence of paths, or array
        One file holding every input plane, one file per input plane (same Y, X), a zarr folder, or
        any array with numpy slicing (numpy, zarr, dask).
    n_channels : int, optional
        The model's number of input planes: checked, and used to tell (Y, X, C) from (C, Y, X).

    Returns
    -------
    ImageRows

    Examples
    --------
    >>> rows = open_rows(np.zeros((300, 200), np.uint16))
    >>> rows.shape, rows.rows(10, 20).shape
    ((1, 300, 200), (1, 10, 200))
    """
    if isinstance(image, (str, Path)):
        paths: list[Any] = [Path(image)]
    elif isinstance(image, (list, tuple)) and image and all(isinstance(p, (str, Path)) for p in image):
        paths = [Path(p) for p in image]
    else:
        array = image
        if not hasattr(array, "shape") or not hasattr(array, "__getitem__"):
            array = np.asarray(array)
        kept, layout = _layout(array.shape, n_channels, None)
        planes, yx = _planes(kept, layout)
        rows = ImageRows([(planes, _array_reader(array, tuple(array.shape), kept, layout))], yx, np.dtype(array.dtype), "array")
        _check(rows, n_channels)
        return rows
    readers, closers, shape_yx, dtypes = [], [], None, []
    try:
        for path in paths:
            read, planes, yx, dtype, close = _open_one(path, None if len(paths) > 1 else n_channels)
            closers += close
            if shape_yx is not None and yx != shape_yx:
                raise StainsegError(f"is {yx[0]} x {yx[1]} px but {paths[0].name} is {shape_yx[0]} x {shape_yx[1]}; "
                                    "the input planes of an image must have one size", path)
            shape_yx = yx
            readers.append((planes, read))
            dtypes.append(dtype)
    except BaseException:
        for close in closers:
            close()
        raise
    assert shape_yx is not None
    dtype = np.result_type(*[d.newbyteorder("=") for d in dtypes])
    rows = ImageRows(readers, shape_yx, dtype, ";".join(str(p) for p in paths), closers)
    try:
        _check(rows, n_channels)
    except BaseException:
        rows.close()
        raise
    return rows


def _check(rows: ImageRows, n_channels: Optional[int]) -> None:
    c, y, x = rows.shape
    where = rows.where if rows.where != "array" else None
    if n_channels is not None and c != n_channels:
        raise StainsegError(f"image has {c} plane(s) but the model expects {n_channels}; give a stack with the model's "
                            "input channels in order (see MODEL/model.json)", where)
    if min(y, x) < 2:
        raise StainsegError(f"image is only {y} x {x} pixels; too small to segment", where)
    if rows.dtype == bool or not (np.issubdtype(rows.dtype, np.integer) or np.issubdtype(rows.dtype, np.floating)):
        raise StainsegError(f"unsupported pixel type {rows.dtype}; give an integer or float microscope image", where)


def image_plane_shape(image: Any) -> tuple[int, int]:
    """(Y, X) of an image file, zarr or array without reading its pixels (for choosing the block-wise path).

    Examples
    --------
    >>> image_plane_shape(np.zeros((3, 40, 50)))
    (40, 50)
    """
    with open_rows(image) as rows:
        return rows.shape[1], rows.shape[2]


def pixels(shape_yx: Sequence[int]) -> int:
    """Pixels of one plane."""
    return int(math.prod(int(s) for s in shape_yx))
