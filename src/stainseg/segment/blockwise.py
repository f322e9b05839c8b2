"""Block-wise segmentation of one huge image (TIFF or zarr) through the model's own preprocessing.

``stainseg segment`` takes this path, instead of :meth:`stainseg.Model.run` on the whole image in
memory, for an image of more than ``[segment] blockwise_pixels`` pixels per plane (default
4096², :data:`stainseg.config.SegmentConfig.blockwise_pixels`) and for every zarr / OME-Zarr input.
In Python: :func:`segment_blockwise` (or :meth:`stainseg.Model.segment_blockwise`).

Steps, each holding a band of rows (never a whole plane) in memory:

1. **Statistics pass** (:func:`stainseg.segment.band_prepare.prepare_rows`): the illumination
   field's block medians and the normalisation subsample are gathered band by band, so the input
   of the network is that of :meth:`Model.prepare` on the whole image (the same field, percentiles
   and medians; no per-band statistic, hence no seams).
2. **Inference** into a temporary float32 zarr of probabilities in the output folder: with
   ``tiling = "overlap"`` (default) the very tiles and linear blending of
   :func:`stainseg.segment.tiling.predict_overlap` on the whole image, streamed one tile row at a
   time (:func:`predict_overlap_rows`); with ``tiling = "tiles"`` the paper's two-pass tiles of
   :func:`stainseg.segment.tiling.predict_tiled`, which streams by itself.
3. **Instances** (:func:`stainseg.segment.instances.labels_blockwise`): row bands of ``band`` rows
   with ``margin`` extra rows above and below; an object belongs to the band holding its top row.
   A model without a ``min_size`` / ``min_distance`` (an untrained one) gets them from the whole
   map first (:func:`whole_map_options`), never per band.
4. **Labels** into an OME-Zarr multiscale label image ``OUT/labels/<name>.ome.zarr`` (uint32 ids,
   axes y, x, every level but the first nearest-neighbour subsampled by 2), built under a hidden
   temporary name and renamed when complete; the temporary probabilities are removed.
5. **Object table** per band (:func:`object_table`): the same columns as ``cells.csv`` of an
   image segmented whole (area, centroid, mean of each raw input plane, uncertainty with ``tiles``).

Quality flags come from a central crop of at most :data:`CHECK_CROP` px a side (image checks) and
the labels of that crop (object checks). A model of cells grown from nuclei is not supported here.

Examples
--------
>>> import tempfile
>>> from stainseg.model import Model
>>> model = Model.new(["DNA"])
>>> image = np.random.default_rng(0).gamma(2.0, 50.0, (300, 260)).astype(np.float32)
>>> result = segment_blockwise(model, image, tempfile.mkdtemp(), name="field", band=128)
>>> result.labels_path.name, read_blockwise_labels(result.labels_path).shape
('field.ome.zarr', (300, 260))
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from stainseg.errors import StainsegError
from stainseg.io.atomic import staged_dir
from stainseg.segment.band_prepare import BAND_ROWS, PreparedRows, prepare_rows
from stainseg.segment.rows import ImageRows, is_zarr, open_rows

__all__ = ["segment_blockwise", "BlockwiseResult", "predict_overlap_rows", "whole_map_options", "object_table",
           "read_blockwise_labels", "needs_blockwise", "blockwise_margin",
           "MARGIN_ROWS", "CHECK_CROP", "LABEL_CHUNK"]

MARGIN_ROWS = 128
"""Smallest overlap of the instance bands, px (more for large objects: :func:`blockwise_margin`)."""
CHECK_CROP = 2048
"""Side of the central crop the image quality checks (and object checks) see."""
LABEL_CHUNK = 1024
"""Chunk side of the label and probability zarr arrays."""


@dataclass
class BlockwiseResult:
    """What :func:`segment_blockwise` wrote and measured."""

    labels_path: Path
    """``OUT/labels/<name>.ome.zarr`` (read it with :func:`read_blockwise_labels`)."""
    objects: int
    shape: tuple[int, int]
    flags: list[Any] = field(default_factory=list)
    skipped: bool = False
    cells: list[dict[str, Any]] = field(default_factory=list)
    """One row per object (:func:`object_table`), as in ``cells.csv``."""
    timings: dict[str, float] = field(default_factory=dict)
    probability_path: Optional[Path] = None
    uncertainty_path: Optional[Path] = None
    settings: dict[str, Any] = field(default_factory=dict)
    """Band, margin and the instance options used (those derived from the whole map included)."""


# --------------------------------------------------------------------------- choosing the path


def needs_blockwise(image: Any, budget: int) -> bool:
    """True when ``image`` (a path, a list of one path per plane, or an array) should be segmented block-wise.

    That is: any input is a zarr folder, or one TIFF plane has more than ``budget`` pixels. Only the
    file headers are read; a file that is not a readable TIFF gives False (the whole-image path reads or rejects it).

    Examples
    --------
    >>> needs_blockwise(np.zeros((64, 64)), budget=64 * 64), needs_blockwise(np.zeros((64, 65)), budget=64 * 64)
    (False, True)
    """
    paths = [image] if isinstance(image, (str, Path)) else list(image) if isinstance(image, (list, tuple)) else []
    if paths and all(isinstance(p, (str, Path)) for p in paths):
        if any(is_zarr(p) for p in paths):
            return True
        try:
            with open_rows(paths[0]) as rows:
                return rows.shape[1] * rows.shape[2] > int(budget)
        except StainsegError:  # not a TIFF (PNG, JPEG), or unreadable: the whole-image reader reports it
            return False
    shape = np.shape(image) if not hasattr(image, "shape") else tuple(image.shape)
    with open_rows(np.broadcast_to(np.zeros((), np.uint8), shape)) as rows:
        return rows.shape[1] * rows.shape[2] > int(budget)


def blockwise_margin(model: Any) -> int:
    """Overlap of the instance bands for ``model``'s objects: 4 tallest-object diameters plus the dilation, at least :data:`MARGIN_ROWS`.

    The tallest object is the 99th area percentile of the training labels (as a disk), when the model
    records it.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> blockwise_margin(Model.new(["DNA"]))
    128
    """
    objects = (getattr(model, "derived", None) or {}).get("objects") or {}
    area = (objects.get("area_percentiles") or {}).get("99") or objects.get("area_median")
    if not area:
        return MARGIN_ROWS
    diameter = 2.0 * math.sqrt(float(area) / math.pi)
    return max(MARGIN_ROWS, int(math.ceil((4 * diameter + model.dilation) / 32.0)) * 32)


# --------------------------------------------------------------------------- files


def _zarr_array(path: Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
    import zarr

    return zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks, fill_value=0, zarr_format=2)


def read_blockwise_labels(path: str | Path, level: int = 0) -> Any:
    """The label array (a lazy zarr array, Y x X uint32) of ``labels/<name>.ome.zarr`` at a resolution level.

    ``np.asarray(read_blockwise_labels(path))`` reads it whole; slice it to read part of it.
    The reader is :func:`stainseg.io.omezarr.open_label_image` (one-line errors for a missing or
    unreadable store).

    Examples
    --------
    >>> read_blockwise_labels("missing.ome.zarr")
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: missing.ome.zarr: no OME-Zarr label image here; give OUT/labels/<name>.ome.zarr of stainseg segment
    """
    from stainseg.io.omezarr import open_label_image

    return open_label_image(path, level)


# --------------------------------------------------------------------------- inference


def predict_overlap_rows(image: Any, predictor: Callable[[np.ndarray], np.ndarray], out: Any, tile_size: int = 1152,
                         overlap: int = 96, batch_size: int = 1, progress: Optional[Callable[[int, int], None]] = None) -> None:
    """:func:`stainseg.segment.tiling.predict_overlap` streamed one tile row at a time into ``out``.

    The same tiles (:func:`~stainseg.segment.tiling.overlap_origins`) and linear ramps, accumulated
    in the same order, so ``out`` holds the whole-image result; only one tile row of input (rows
    from ``image.rows`` or ``image[:, y0:y1]``) and of sums is in memory.

    Parameters
    ----------
    image : PreparedRows or array (C, Y, X)
        The network input.
    predictor : callable
        ``(N, C, ty, tx) float32 -> (N, K, ty, tx)``.
    out : array (K, Y, X)
        Written in finished row ranges (e.g. a zarr array).
    tile_size, overlap, batch_size
        As in ``predict_overlap``.
    progress : callable, optional
        ``progress(tiles_done, tiles_total)``.

    Examples
    --------
    >>> from stainseg.segment.tiling import predict_overlap
    >>> img = np.random.default_rng(0).random((1, 300, 500), dtype=np.float32)
    >>> out = np.zeros((1, 300, 500), np.float32)
    >>> predict_overlap_rows(img, lambda x: x * 2, out, tile_size=128, overlap=16)
    >>> bool(np.array_equal(out, predict_overlap(img, lambda x: x * 2, tile_size=128, overlap=16)))
    True
    """
    from stainseg.segment.tiling import overlap_origins, ramp_weight

    _, height, width = (int(s) for s in image.shape)
    if not 0 < overlap < tile_size // 2:
        raise ValueError(f"overlap must be between 1 and tile_size / 2 - 1, got {overlap}")
    ty, ys = overlap_origins(height, tile_size, overlap)
    tx, xs = overlap_origins(width, tile_size, overlap)
    ov_y, ov_x = min(overlap, max(ty // 2 - 1, 1)), min(overlap, max(tx // 2 - 1, 1))
    single = len(ys) == 1 and len(xs) == 1
    read = image.rows if hasattr(image, "rows") else (lambda a, b: np.asarray(image[:, a:b], dtype=np.float32))
    acc: Optional[np.ndarray] = None  # weighted sums of rows [base, base + acc rows)
    total = np.zeros((0, width), np.float32)
    base, done, n_tiles = 0, 0, len(ys) * len(xs)
    for i, y0 in enumerate(ys):
        band = np.asarray(read(y0, y0 + ty), dtype=np.float32)
        end = y0 + ty
        if acc is not None and end - base > acc.shape[1]:
            grow = end - base - acc.shape[1]
            acc = np.concatenate([acc, np.zeros((acc.shape[0], grow, width), np.float32)], axis=1)
            total = np.concatenate([total, np.zeros((grow, width), np.float32)])
        elif acc is None:
            total = np.zeros((end - base, width), np.float32)
        wy = ramp_weight(ty, ov_y, i == 0, i == len(ys) - 1)
        for start in range(0, len(xs), batch_size):
            cols = list(range(start, min(start + batch_size, len(xs))))
            x = np.stack([band[:, :, xs[j]:xs[j] + tx] for j in cols])
            y = np.asarray(predictor(x), dtype=np.float32)
            if acc is None:
                acc = np.zeros((y.shape[1], end - base, width), np.float32)
            for k, j in enumerate(cols):
                if single:
                    acc[...] = y[k]
                    total[...] = 1.0
                    continue
                w = np.outer(wy, ramp_weight(tx, ov_x, j == 0, j == len(xs) - 1))
                window = (slice(y0 - base, y0 - base + ty), slice(xs[j], xs[j] + tx))
                acc[(slice(None),) + window] += y[k] * w
                total[window] += w
            done += len(cols)
            if progress is not None:
                progress(done, n_tiles)
        assert acc is not None
        final = ys[i + 1] if i + 1 < len(ys) else height  # rows above the next tile row are complete
        n = final - base
        if not single:
            acc[:, :n] /= total[:n]
        out[:, base:final] = acc[:, :n]
        acc, total, base = acc[:, n:], total[n:], final


# --------------------------------------------------------------------------- instances


def _bands(height: int, band: int, margin: int) -> Iterator[tuple[int, int, int, int]]:
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        yield y0, y1, max(0, y0 - margin), min(height, y1 + margin)


def whole_map_options(prob: Any, options: dict[str, Any], band: int, margin: int) -> dict[str, Any]:
    """``options`` with a missing ``min_distance`` and ``min_size`` derived from the whole map, band by band.

    :func:`stainseg.segment.instances.probability_to_labels` derives them from the image it is given;
    a band is not the image. ``min_distance``: 0.6 x the typical radius (3 x the mean smoothed
    distance to the background over every mask pixel); ``min_size``: 10 % of the median area of
    every object (before the size filter), each object counted by the band holding its top row.
    Set values are kept (a trained model has both), so this costs nothing for them.

    Examples
    --------
    >>> prob = np.zeros((2, 200, 120), np.float32); prob[0] = 1
    >>> prob[:, 20:40, 20:40] = [[[0.0]], [[1.0]]]; prob[:, 150:160, 50:60] = [[[0.0]], [[1.0]]]
    >>> whole_map_options(prob, {"threshold": 0.5, "min_size": None, "min_distance": None, "min_depth": None,
    ...                          "smoothing": None, "dilation": 1}, band=64, margin=32)["min_size"]
    25
    """
    from stainseg.segment.instances import probability_to_labels, smooth_probability
    from stainseg.segment.seeds import distance_map, mask_components

    options = dict(options)
    k, height, _ = prob.shape
    if options.get("min_distance") is None and k == 2:
        total, count = 0.0, 0
        for y0, y1, e0, e1 in _bands(height, band, margin):
            p = np.asarray(prob[:, e0:e1], np.float32)
            if options.get("smoothing"):
                p = smooth_probability(p, float(options["smoothing"]))
            mask = (1.0 - p[0]) > options["threshold"]
            if not mask.any():
                continue
            dist = distance_map(mask, mask_components(mask))[y0 - e0:y1 - e0]
            core = mask[y0 - e0:y1 - e0]
            total += float(dist[core].sum(dtype=np.float64))
            count += int(core.sum())
        options["min_distance"] = max(2, int(round(0.6 * 3.0 * total / count))) if count else 2
    if options.get("min_size") is None:
        areas = []
        for y0, y1, e0, e1 in _bands(height, band, margin):
            labels = probability_to_labels(np.asarray(prob[:, e0:e1], np.float32), options["threshold"], 1, 1,
                                           options.get("min_distance"), options.get("min_depth"), options.get("smoothing"))
            sizes = np.bincount(labels.ravel())
            for i, box in enumerate(ndi.find_objects(labels), start=1):
                if box is None:
                    continue
                cut = (box[0].start == 0 and e0 > 0) or (box[0].stop == e1 - e0 and e1 < height)
                if y0 <= box[0].start + e0 < y1 and not cut:
                    areas.append(int(sizes[i]))
        options["min_size"] = max(4, int(0.1 * np.median(areas))) if areas else 4
    return options


# --------------------------------------------------------------------------- object table


def object_table(name: str, labels: Any, source: ImageRows, channel_names: Sequence[str], objects: int,
                 uncertainty: Any = None, band: int = BAND_ROWS) -> list[dict[str, Any]]:
    """One row per object of a block-wise label image, measured band by band (label-indexed sums).

    The columns and values of :func:`stainseg.stages.segment.cell_table` on the whole image: image,
    label, area, centroid, mean of each raw input plane, mean uncertainty (when given).

    Examples
    --------
    >>> from stainseg.segment.rows import open_rows
    >>> labels = np.zeros((6, 5), np.uint32); labels[1:3, 1:3] = 1; labels[4:6, 0:5] = 2
    >>> rows = object_table("x", labels, open_rows(np.arange(30.0).reshape(6, 5)), ["DNA"], 2, band=4)
    >>> [(r["label"], r["area"], r["centroid_y"], r["mean_DNA"]) for r in rows]
    [(1, 4, 1.5, 9.0), (2, 10, 4.5, 24.5)]
    """
    from stainseg.segment.band_prepare import _as_float

    height, width = int(labels.shape[0]), int(labels.shape[1])
    size = objects + 1
    area = np.zeros(size, np.int64)
    sum_y, sum_x = np.zeros(size), np.zeros(size)
    sums = np.zeros((source.shape[0], size))
    sum_u = np.zeros(size) if uncertainty is not None else None
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        lab = np.asarray(labels[y0:y1]).ravel()
        where = np.flatnonzero(lab)
        if where.size == 0:
            continue
        flat = lab[where].astype(np.intp)
        area += np.bincount(flat, minlength=size)
        sum_y += np.bincount(flat, weights=where // width + y0, minlength=size)
        sum_x += np.bincount(flat, weights=where % width, minlength=size)
        raw = _as_float(source.rows(y0, y1), source.where)
        for c in range(raw.shape[0]):
            sums[c] += np.bincount(flat, weights=raw[c].ravel()[where], minlength=size)
        if sum_u is not None:
            sum_u += np.bincount(flat, weights=np.asarray(uncertainty[y0:y1], np.float32).ravel()[where], minlength=size)
    present = np.flatnonzero(area[1:]) + 1
    count = area[present].astype(np.float64)
    rows = []
    for i, lab in enumerate(present):
        row: dict[str, Any] = {"image": name, "label": int(lab), "area": int(area[lab]),
                               "centroid_y": round(float(sum_y[lab] / count[i]), 2), "centroid_x": round(float(sum_x[lab] / count[i]), 2)}
        for c, ch in enumerate(channel_names):
            row[f"mean_{ch}"] = round(float(sums[c, lab] / count[i]), 3)
        if sum_u is not None:
            row["uncertainty"] = round(float(sum_u[lab] / count[i]), 4)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the whole path


def _write_levels(group: Any, shape: tuple[int, int], name: str, extra: dict[str, Any],
                  fill: Callable[[Any], int], band: int) -> int:
    """Create the multiscale arrays, let ``fill(level0)`` write the labels, then subsample the other levels band by band."""
    from stainseg.io.omezarr import _create_levels, _write_multiscale_metadata, pyramid_levels

    levels = pyramid_levels(shape)
    arrays = _create_levels(group, shape, levels, LABEL_CHUNK)
    objects = fill(arrays[0])
    step = max(2 ** (levels - 1), (band // 2 ** (levels - 1)) * 2 ** (levels - 1))
    for y0 in range(0, shape[0], step):
        rows = np.asarray(arrays[0][y0:y0 + step])
        for level in range(1, levels):
            f = 2 ** level
            arrays[level][y0 // f: y0 // f + -(-rows.shape[0] // f)] = rows[::f, ::f]
    _write_multiscale_metadata(group, 2, levels, "yx", name, {**extra, "objects": objects})
    return objects


def _check_crop(source: ImageRows) -> tuple[int, int, int, int]:
    _, height, width = source.shape
    h, w = min(height, CHECK_CROP), min(width, CHECK_CROP)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return y0, y0 + h, x0, x0 + w


def segment_blockwise(model: Any, image: Any, out: str | Path, name: Optional[str] = None, band: int = BAND_ROWS,
                      margin: Optional[int] = None, save_probability: bool = False, save_uncertainty: bool = False,
                      check: bool = True, skip_flagged: bool = False, table: bool = True,
                      **overrides: Any) -> BlockwiseResult:
    """Segment one huge image block-wise: labels to ``OUT/labels/<name>.ome.zarr``, nothing whole in memory.

    Parameters
    ----------
    model : stainseg.Model
    image : str, Path, sequence of paths, or array
        A TIFF or zarr / OME-Zarr holding the model's input planes, one file per plane, or an array
        (numpy, zarr, dask) (see :func:`stainseg.segment.rows.open_rows`).
    out : str or Path
        The output folder (``labels/`` and, when asked, ``probability/``, ``uncertainty/`` go in it;
        the temporary probabilities too, removed at the end).
    name : str, optional
        Name of the outputs (default: the file name without its extensions, or ``image``).
    band : int
        Rows per band of every pass (memory: about ``(band + 2 margin) x X`` pixels of a few
        arrays at once in the instance step).
    margin : int, optional
        Overlap rows of the instance bands (default :func:`blockwise_margin`); must exceed the
        tallest object.
    save_probability, save_uncertainty : bool
        Keep the probabilities as ``probability/<name>.zarr`` (K, Y, X) float32; segment with the
        paper's two-pass tiles and keep their disagreement as ``uncertainty/<name>.zarr``.
    check : bool
        Quality flags from a central crop (:data:`CHECK_CROP`) and its labels.
    skip_flagged : bool
        An image with a non-informative flag is not segmented (empty labels, ``skipped``).
    table : bool
        Measure the objects (:attr:`BlockwiseResult.cells`).
    **overrides
        Segmentation settings, as for :meth:`stainseg.Model.run`.

    Returns
    -------
    BlockwiseResult

    Examples
    --------
    >>> import tempfile, tifffile
    >>> from stainseg.model import Model
    >>> folder = Path(tempfile.mkdtemp())
    >>> tifffile.imwrite(folder / "plate.tif", np.random.default_rng(1).gamma(2, 60, (400, 300)).astype(np.uint16))
    >>> result = segment_blockwise(Model.new(["DNA"]), folder / "plate.tif", folder / "out", band=128)
    >>> sorted(p.name for p in (folder / "out").iterdir()), result.shape
    (['labels'], (400, 300))
    """
    from stainseg.quality import FLAG_MEANINGS, Flag, check_objects
    from stainseg.segment.instances import labels_blockwise

    t0 = time.perf_counter()
    out = Path(out)
    if model.cell_extent is not None:
        raise StainsegError("block-wise segmentation of cells grown from nuclei is not supported; segment crops of the image "
                            "below [segment] blockwise_pixels instead", getattr(model, "path", None))
    if band < 16:
        raise StainsegError(f"band of {band} rows is too small; use at least 16 (default {BAND_ROWS})")
    if save_uncertainty:
        overrides = {**overrides, "tiling": "tiles", "two_pass": True}
    settings = model._settings(overrides)
    if name is None:
        first = image if isinstance(image, (str, Path)) else image[0] if isinstance(image, (list, tuple)) else None
        name = Path(first).name.split(".")[0] if isinstance(first, (str, Path)) else "image"
    options = model.instance_options(**overrides)
    margin = int(margin) if margin is not None else blockwise_margin(model)
    timings: dict[str, float] = {}
    with open_rows(image, model.in_channels) as source:
        _, height, width = source.shape
        flags: list[Any] = []
        if check:
            cy0, cy1, cx0, cx1 = _check_crop(source)
            flags = list(model.check(source.crop(cy0, cy1, cx0, cx1).astype(np.float32)))
        prepared = prepare_rows(source, model.preprocessing, band)
        timings["prepare_s"] = time.perf_counter() - t0
        skipped = bool(skip_flagged and any(not f.informative for f in flags))
        if prepared.constant and not any(f.code == "blank" for f in flags):
            flags.insert(0, Flag("blank", f"blank: {FLAG_MEANINGS['blank']}"))
        labels_path = out / "labels" / f"{name}.ome.zarr"
        prob_final = out / "probability" / f"{name}.zarr" if save_probability else None
        unc_final = out / "uncertainty" / f"{name}.zarr" if save_uncertainty else None
        run_network = not (skipped or prepared.constant)
        used = {"band": int(band), "margin": margin, "tiling": settings.tiling}
        stack = contextlib.ExitStack()
        with stack:
            prob = unc = None
            if run_network:
                prob_dir = stack.enter_context(staged_dir(prob_final) if prob_final else _temporary_dir(out / f".{name}.probability.zarr"))
                unc_dir = stack.enter_context(staged_dir(unc_final)) if unc_final else None
                prob, unc = _infer(model, prepared, settings, prob_dir, unc_dir, timings)
                t2 = time.perf_counter()
                options = whole_map_options(prob, options, band, margin)
                used.update(options)

            def fill(level0: Any) -> int:
                if prob is None:
                    return 0
                return labels_blockwise(prob, level0, band, margin, **options)

            with staged_dir(labels_path) as tmp:
                import zarr

                group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
                t3 = time.perf_counter()
                objects = _write_levels(group, (height, width), name,
                                        {"source": source.where, "blockwise": used, "skipped": skipped}, fill, band)
                timings["postprocess_s"] = time.perf_counter() - (t2 if run_network else t3)
                level0 = group["0"]
                if check and run_network and model.reference and model.reference.get("objects"):
                    flags += check_objects(np.asarray(level0[cy0:cy1, cx0:cx1]), model.reference)
                t4 = time.perf_counter()
                cells = object_table(name, level0, source, model.plane_names, objects, unc, band) if table and objects else []
                timings["table_s"] = time.perf_counter() - t4
    timings["total_s"] = time.perf_counter() - t0
    return BlockwiseResult(labels_path=labels_path, objects=objects, shape=(height, width), flags=flags, skipped=skipped,
                           cells=cells, timings=timings, probability_path=prob_final if run_network else None,
                           uncertainty_path=unc_final if run_network else None, settings=used)


@contextlib.contextmanager
def _temporary_dir(path: Path) -> Iterator[Path]:
    """A hidden folder ``.<name>.<pid>.tmpdir`` beside ``path``, removed at the end whatever happens."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmpdir" if path.name.startswith(".") else f".{path.name}.{os.getpid()}.tmpdir")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StainsegError(f"cannot create the output folder ({exc.strerror}); choose a writable -o folder", tmp.parent) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _infer(model: Any, prepared: PreparedRows, settings: Any, prob_dir: Path, unc_dir: Optional[Path],
           timings: dict[str, float]) -> tuple[Any, Any]:
    """Probabilities (and the two-pass uncertainty) of the prepared image into zarr arrays."""
    from stainseg.segment.tiling import predict_tiled

    t0 = time.perf_counter()
    _, height, width = prepared.shape
    k = model.n_classes
    chunk_rows = min(height, 256)
    prob = _zarr_array(prob_dir, (k, height, width), "f4", (k, chunk_rows, min(width, 4 * LABEL_CHUNK)))
    unc = _zarr_array(unc_dir, (height, width), "f4", (chunk_rows, min(width, 4 * LABEL_CHUNK))) if unc_dir else None
    predictor = model.predictor()
    if settings.tiling == "overlap":
        predict_overlap_rows(prepared, predictor, prob, settings.overlap_tile, settings.overlap)
    else:
        predict_tiled(prepared, predictor, tile_size=settings.tile_size, two_pass=settings.two_pass,
                      batch_size=settings.batch_size, out=prob, uncertainty=unc is not None, uncertainty_out=unc)
    timings["inference_s"] = time.perf_counter() - t0
    return prob, unc
