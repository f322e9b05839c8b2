"""Label images as OME-Zarr (NGFF 0.4, zarr format 2): an HCS plate of label fields.

Layout of a plate (``write_plate_labels``)::

    labels.ome.zarr/              plate: rows A..P, columns 1..24, wells "A/1", ...
      A/1/                        well: one field per site
        0/                        field (site 1): a multiscale image of label ids, axes (t, y, x)
          0/ 1/ ...               resolution levels, nearest-neighbour subsampled by 2 (labels stay ids)

Time points map to the T axis of each field: plane ``t`` holds the labels of the ``t``-th time
value of the whole plate (sorted; listed in the plate's ``stainseg.times`` attribute), so every
field has the same T length and napari shows one time slider. A time point missing for a site
(failed or absent image set) is an all-zero plane, listed in the field's ``stainseg.missing_times``.
Without a ``time`` field the axes are (y, x). Label ids are stored as uint32.

Everything is written plane by plane (one time plane of one field at a time), so no full copy of
the plate is held in memory. The store is built
in a temporary folder beside the target and renamed onto it when complete (readers never see a
half-written plate).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from stainseg.errors import StainsegError
from stainseg.io.atomic import staged_dir

LABEL_DTYPE = np.dtype(np.uint32)
_WELL = re.compile(r"^([A-Za-z]+)0*(\d+)$")


def _fmt():
    from ome_zarr.format import FormatV04

    return FormatV04()


def _sort_key(value: str) -> tuple[int, Any]:
    return (0, int(value)) if str(value).isdigit() else (1, str(value))


def pyramid_levels(shape_yx: Sequence[int], min_side: int = 256, max_levels: int = 6) -> int:
    """Number of resolution levels: halve until the smaller side would drop below ``min_side``.

    Examples
    --------
    >>> pyramid_levels((2048, 2048)), pyramid_levels((300, 300))
    (4, 1)
    """
    levels, side = 1, min(shape_yx)
    while levels < max_levels and side // 2 >= min_side:
        side //= 2
        levels += 1
    return levels


def _create_levels(group, shape: tuple[int, ...], levels: int, chunk: int) -> list:
    arrays = []
    for level in range(levels):
        f = 2 ** level
        lvl_shape = (*shape[:-2], -(-shape[-2] // f), -(-shape[-1] // f))
        chunks = (*(1,) * (len(shape) - 2), min(chunk, lvl_shape[-2]), min(chunk, lvl_shape[-1]))
        arrays.append(group.create_array(str(level), shape=lvl_shape, chunks=chunks, dtype=LABEL_DTYPE, fill_value=0,
                                         chunk_key_encoding={"name": "v2", "separator": "/"}))
    return arrays


def _write_multiscale_metadata(group, ndim: int, levels: int, axes: str, name: str, extra: Mapping[str, Any]) -> None:
    from ome_zarr.writer import write_multiscales_metadata

    datasets = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [1.0] * (ndim - 2) + [float(2 ** level)] * 2}]} for level in range(levels)]
    write_multiscales_metadata(group, datasets, fmt=_fmt(), axes=list(axes), name=name,
                               metadata={"method": "nearest-neighbour subsampling (label ids are preserved)"})
    if extra:
        group.attrs["stainseg"] = dict(extra)


def _write_plane(arrays: list, index: tuple[int, ...], plane: np.ndarray) -> None:
    """Write one (Y, X) plane into every level (level l keeps every 2**l-th pixel)."""
    for level, arr in enumerate(arrays):
        f = 2 ** level
        arr[index] = plane[::f, ::f]


@contextlib.contextmanager
def _staged_group(path: Path) -> Iterator[Any]:
    """A zarr group built under a hidden temporary name and renamed onto ``path`` on success (:func:`staged_dir`)."""
    import zarr

    with staged_dir(path) as tmp:
        try:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        except OSError as exc:
            raise StainsegError(f"cannot write the OME-Zarr store ({exc.strerror}); choose a writable -o folder", path) from None
        yield root


def _split_well(well: str) -> tuple[str, str]:
    m = _WELL.match(str(well).strip())
    if not m:
        raise StainsegError(f"well {well!r} is not a plate well name like A01 or B3; an OME-Zarr plate needs them "
                            "(use --format tiff, or a filename pattern whose well group gives such names)")
    return m.group(1).upper(), str(int(m.group(2)))


def _read_tiff_labels(path: str) -> np.ndarray:
    """A (Y, X) label image from a TIFF file (one-line error naming the file when unreadable)."""
    import tifffile

    try:
        return np.squeeze(tifffile.imread(path))
    except Exception as exc:  # missing or corrupt file
        raise StainsegError(f"cannot read the label image ({type(exc).__name__}); run stainseg segment again", path) from None


def write_plate_labels(path: str | Path, rows: Sequence[Mapping[str, Any]], name: str = "labels",
                       chunk: int = 1024, read: Callable[[str], np.ndarray] | None = None) -> Path:
    """Write the label images of a plate as an OME-Zarr HCS plate (one multiscale label field per site).

    Parameters
    ----------
    path : str or Path
        The ``.ome.zarr`` folder to write (replaced atomically if it exists).
    rows : sequence of mappings
        One per image set, with ``well`` (e.g. ``A01``), ``label_file`` and optionally ``site``,
        ``time`` and ``name`` — the rows of a segmentation's ``index.csv``.
    name : str
        Name of the plate (and of the field images).
    chunk : int
        Chunk side in Y and X.
    read : callable, optional
        ``read(label_file) -> (Y, X) array``; default: the TIFF label images ``stainseg segment`` writes,
        read with tifffile (this module does not import :mod:`stainseg.io.images`, which reads OME-Zarr
        labels through it; the segment stage passes its own reader that also takes block-wise labels).

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    See the module docstring for the layout and how time points map to the T axis.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from stainseg.io.images import write_labels
    >>> out = Path(tempfile.mkdtemp())
    >>> labels = np.zeros((32, 32), np.uint16); labels[4:12, 4:12] = 1
    >>> rows = [{"name": f"A01_s{s}", "well": "A01", "site": str(s), "label_file": str(write_labels(out / f"{s}.tif", labels))}
    ...         for s in (1, 2)]
    >>> plate = write_plate_labels(out / "labels.ome.zarr", rows)
    >>> read_field_labels(plate, "A01", field=1).shape
    (32, 32)
    """
    from ome_zarr.writer import write_plate_metadata, write_well_metadata

    if read is None:
        read = _read_tiff_labels
    rows = list(rows)
    if not rows:
        raise StainsegError("no label images to write as an OME-Zarr plate")
    missing = [k for k in ("well", "label_file") if k not in rows[0] or rows[0][k] in (None, "")]
    if missing:
        raise StainsegError(f"image sets have no {missing[0]} field, so they cannot form an OME-Zarr plate; "
                            "use --format tiff, or --experiment with a filename pattern that has a (?P<well>...) group")
    has_time = any(str(r.get("time", "")) != "" for r in rows)
    times = sorted({str(r.get("time", "")) for r in rows}, key=_sort_key)
    plate: dict[tuple[str, str], dict[str, dict[str, Mapping[str, Any]]]] = {}
    for r in rows:
        key = _split_well(r["well"])
        site, t = str(r.get("site", "") or "1"), str(r.get("time", ""))
        if t in plate.setdefault(key, {}).setdefault(site, {}):
            raise StainsegError(f"two image sets for well {r['well']} site {site} time {t or '-'}; "
                                "the filename pattern must tell them apart")
        plate[key][site][t] = r
    row_names = sorted({k[0] for k in plate}, key=lambda s: (len(s), s))
    col_names = sorted({k[1] for k in plate}, key=int)
    wells = sorted(plate, key=lambda k: (row_names.index(k[0]), int(k[1])))
    path = Path(path)
    with _staged_group(path) as root:
        field_count = max(len(sites) for sites in plate.values())
        write_plate_metadata(root, row_names, col_names, [f"{r}/{c}" for r, c in wells], fmt=_fmt(),
                             field_count=field_count, name=name)
        root.attrs["stainseg"] = {"times": times if has_time else [], "time_axis": "t" if has_time else None,
                                  "wells": {f"{r}/{c}": str(next(iter(next(iter(plate[(r, c)].values())).values()))["well"])
                                            for r, c in wells}}
        for r, c in wells:
            well_group = root.require_group(r).require_group(c)
            sites = sorted(plate[(r, c)], key=_sort_key)
            write_well_metadata(well_group, [{"path": str(i)} for i in range(len(sites))], fmt=_fmt())
            for i, site in enumerate(sites):
                _write_field(well_group.require_group(str(i)), plate[(r, c)][site], times, has_time, name, site, chunk, read)
    return path


def _write_field(group, by_time: Mapping[str, Mapping[str, Any]], times: list[str], has_time: bool, name: str,
                 site: str, chunk: int, read: Callable[[str], np.ndarray]) -> None:
    first = next(iter(by_time.values()))
    first_plane = np.asarray(read(str(first["label_file"])))  # sizes the arrays; written below, not read twice
    shape_yx = first_plane.shape
    shape = (len(times), *shape_yx) if has_time else tuple(shape_yx)
    levels = pyramid_levels(shape_yx)
    arrays = _create_levels(group, shape, levels, chunk)
    names, absent = [], []
    for t_index, t in enumerate(times):
        row = by_time.get(t)
        if row is None:
            absent.append(t)
            names.append("")
            continue  # fill value 0: an empty plane
        if row is first:
            plane, first_plane = first_plane, None  # read above; held no longer than needed
        else:
            plane = np.asarray(read(str(row["label_file"])))
        if plane.shape != shape_yx:
            raise StainsegError(f"label image is {plane.shape}, but others of its site are {shape_yx}; "
                                "all time points of a site must have the same size", row["label_file"])
        if plane.size and (plane.min() < 0 or plane.max() > np.iinfo(LABEL_DTYPE).max):
            raise StainsegError("label ids must be between 0 and 2**32-1", row["label_file"])
        _write_plane(arrays, (t_index,) if has_time else (), plane.astype(LABEL_DTYPE, copy=False))
        names.append(str(row.get("name", "")))
    _write_multiscale_metadata(group, len(shape), levels, "tyx" if has_time else "yx", name,
                               {"site": site, "image_sets": names, "missing_times": absent})


def read_field_labels(path: str | Path, well: str, field: int = 0, level: int = 0) -> np.ndarray:
    """The label array (T, Y, X) or (Y, X) of one field of a plate written by :func:`write_plate_labels`.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from stainseg.io.images import write_labels
    >>> out = Path(tempfile.mkdtemp())
    >>> labels = np.zeros((32, 32), np.uint16); labels[4:12, 4:12] = 5
    >>> path = write_labels(out / "l.tif", labels)
    >>> plate = write_plate_labels(out / "p.ome.zarr", [{"name": "B03", "well": "B03", "label_file": str(path)}])
    >>> int(read_field_labels(plate, "B03").max())
    5
    """
    import zarr

    r, c = _split_well(well)
    try:
        return np.asarray(zarr.open_group(str(path), mode="r")[f"{r}/{c}/{field}/{level}"])
    except (KeyError, FileNotFoundError) as exc:
        raise StainsegError(f"no field {field} of well {well} at level {level} ({exc}); check the well name", path) from None


def is_plate(path: str | Path) -> bool:
    """True for an OME-Zarr HCS plate (e.g. ``OUT/labels.ome.zarr`` of ``--format ome-zarr``): not one label image.

    Reads only the group's attributes (zarr format 2 ``.zattrs`` or format 3 ``zarr.json``);
    anything unreadable is not called a plate.

    Examples
    --------
    >>> is_plate("absent.ome.zarr")
    False
    """
    import json

    path = Path(path)
    for name in (".zattrs", "zarr.json"):
        try:
            attrs = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs) if name == "zarr.json" else attrs
        attrs = attrs.get("ome", attrs) if isinstance(attrs, dict) else attrs
        if isinstance(attrs, dict) and "plate" in attrs:
            return True
    return False


def open_label_image(path: str | Path, level: int = 0) -> Any:
    """The lazy label array (Y, X) of an OME-Zarr multiscale label image at one resolution level.

    Such an image is what ``stainseg segment`` writes for a huge image (``OUT/labels/<name>.ome.zarr``,
    :func:`stainseg.segment.blockwise.segment_blockwise`). Slice the array to read part of it, or
    ``np.asarray`` it whole (:func:`read_label_image`).

    Raises
    ------
    StainsegError
        One line naming the store and the fix: missing, not an OME-Zarr image, no such level, or
        not a 2-D integer array.

    Examples
    --------
    >>> open_label_image("missing.ome.zarr")
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: missing.ome.zarr: no OME-Zarr label image here; give OUT/labels/<name>.ome.zarr of stainseg segment
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise StainsegError("no OME-Zarr label image here; give OUT/labels/<name>.ome.zarr of stainseg segment", path)
    if is_plate(path):
        raise StainsegError("is an OME-Zarr plate, not one label image; give labels/<name>.ome.zarr, "
                            "or read a field of the plate with read_field_labels", path)
    fix = "run stainseg segment again for this image (or remove the folder)"
    try:
        group = zarr.open_group(str(path), mode="r")
        array = group[str(level)]
    except KeyError:
        raise StainsegError(f"OME-Zarr label image has no resolution level {level}; it is incomplete, {fix}", path) from None
    except Exception as exc:  # no group metadata, unreadable attributes ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StainsegError(f"is not a readable OME-Zarr label image ({reason}); {fix}", path) from None
    if not hasattr(array, "dtype") or len(array.shape) != 2 or not np.issubdtype(array.dtype, np.integer):
        raise StainsegError(f"level {level} is not a 2-D array of label ids; give OUT/labels/<name>.ome.zarr of stainseg segment", path)
    return array


def read_label_image(path: str | Path, level: int = 0) -> np.ndarray:
    """:func:`open_label_image` read whole into memory; a chunk that cannot be decoded is a one-line error.

    Examples
    --------
    >>> import tempfile
    >>> import zarr
    >>> store = Path(tempfile.mkdtemp()) / "field.ome.zarr"
    >>> group = zarr.open_group(str(store), mode="w", zarr_format=2)
    >>> group.create_array("0", shape=(4, 6), chunks=(2, 3), dtype="u4", fill_value=0)[1:3, 2:5] = 7
    >>> int(read_label_image(store).sum())
    42
    """
    array = open_label_image(path, level)
    try:
        return np.asarray(array[...])
    except Exception as exc:  # corrupt or truncated chunk files raise many kinds of errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StainsegError(f"cannot read the OME-Zarr label image ({reason}); the store is corrupt, "
                            "run stainseg segment again for this image", path) from None
