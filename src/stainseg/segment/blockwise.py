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
A model with a working scale (``preprocessing.downsample = f > 1``) runs steps 2 and 3 on the
prepared rows reduced by block means (:class:`stainseg.segment.band_scale.ScaledRows`), draws its
objects at the input's size (:func:`stainseg.segment.band_scale.refine_rows`) and interpolates any
kept probability or uncertainty map back to it.

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
from typing import Any, Callable, Iterator, Optional

import numpy as np

from stainseg.errors import StainsegError
from stainseg.io.atomic import staged_dir
from stainseg.segment.band_inference import predict_overlap_rows
from stainseg.segment.band_objects import object_table, whole_map_options
from stainseg.segment.band_prepare import BAND_ROWS, PreparedRows, prepare_rows
from stainseg.segment.band_scale import ScaledRows, refine_rows, upsample_linear_rows
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
        factor = int(model.preprocessing.downsample)
        network_input = ScaledRows(prepared, factor) if factor > 1 else prepared  # the working scale (stainseg.scale)
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
                scaled = factor > 1  # the network's maps at the working scale go to temporary folders
                prob_dir = stack.enter_context(staged_dir(prob_final) if prob_final and not scaled
                                               else _temporary_dir(out / f".{name}.probability.zarr"))
                unc_dir = None
                if unc_final:
                    unc_dir = stack.enter_context(_temporary_dir(out / f".{name}.uncertainty.zarr") if scaled else staged_dir(unc_final))
                prob, unc = _infer(model, network_input, settings, prob_dir, unc_dir, timings)
                t2 = time.perf_counter()
                options = whole_map_options(prob, options, band, margin)
                used.update(options)
                if scaled and prob_final is not None:  # the kept maps at the input's size
                    _full_size(prob, stack.enter_context(staged_dir(prob_final)), (height, width), factor, band)
                if scaled and unc is not None and unc_final is not None:
                    unc = _full_size(unc, stack.enter_context(staged_dir(unc_final)), (height, width), factor, band)

            def fill(level0: Any) -> int:
                if prob is None:
                    return 0
                if factor == 1:
                    return labels_blockwise(prob, level0, band, margin, **options)
                with _temporary_dir(out / f".{name}.labels.zarr") as small_dir:  # objects at the working scale, drawn at full size
                    small = _zarr_array(small_dir, prob.shape[1:], "u4", (min(prob.shape[1], LABEL_CHUNK), min(prob.shape[2], LABEL_CHUNK)))
                    count = labels_blockwise(prob, small, band, margin, **{**options, "dilation": 1})
                    return refine_rows(small, prob, level0, factor, count, options["threshold"], options["dilation"],
                                       options.get("smoothing"), band)

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


def _full_size(small: Any, folder: Path, shape: tuple[int, int], factor: int, band: int) -> Any:
    """A zarr array in ``folder`` holding working-scale ``small`` (..., y, x) at the input's (Y, X) ``shape`` (bilinear)."""
    full = tuple(small.shape[:-2]) + shape
    big = _zarr_array(folder, full, "f4", tuple(small.shape[:-2]) + (min(shape[0], 256), min(shape[1], 4 * LABEL_CHUNK)))
    upsample_linear_rows(small, big, factor, band)
    return big


def _infer(model: Any, prepared: PreparedRows | ScaledRows, settings: Any, prob_dir: Path, unc_dir: Optional[Path],
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
