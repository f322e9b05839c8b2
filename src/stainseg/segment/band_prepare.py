"""The model's preprocessing of a huge image, band by band, with every statistic taken from the whole image.

:func:`stainseg.preprocess.prepare` (what :meth:`stainseg.Model.prepare` and training run) needs the
whole plane in memory. Every whole-plane quantity it uses is, however, a reduction that can be
collected band by band, exactly:

- the spline illumination field (:func:`stainseg.groundtruth.illumination.background_field`) is
  fitted to the medians of square blocks of about ``min(Y, X) / 64`` px: bands whose rows are a
  multiple of the block side give those block medians unchanged (the down-sampled copy of the
  whole plane), the same iterative fit runs once on them, and the tensor spline is then evaluated
  on each band's rows only (``rows_y[y0:y1] @ cols_x``, the rows of the whole-image product);
- the percentiles, the median level (hybrid / training normalisation) and the median subtracted
  after normalisation are taken by ``prepare`` from the regular ~512 x 512 subsample
  ``plane[::Y // 512, ::X // 512]``: its rows are gathered band by band, so the statistics are
  those of the whole image, never of a band, and no seam can appear at band borders.

So :meth:`PreparedRows.rows` gives, for any band, the rows of ``prepare(whole stack)`` (to float32
rounding of the field product; ``tests/test_blockwise.py`` checks it on a real BBBC039 mosaic).

Examples
--------
>>> from stainseg.preprocess import Preprocessing, prepare
>>> from stainseg.segment.rows import open_rows
>>> image = np.random.default_rng(0).gamma(2.0, 50.0, (1, 600, 700)).astype(np.float32)
>>> settings = Preprocessing()
>>> prepared = prepare_rows(open_rows(image, 1), settings, band=128)
>>> bool(np.abs(prepared.rows(0, 600) - prepare(image, settings)).max() < 1e-4)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from stainseg.errors import StainsegError
from stainseg.preprocess import FLOOR_FRACTION, Preprocessing, _sample_step, _usable_flat_field
from stainseg.segment.rows import ImageRows

__all__ = ["PreparedRows", "prepare_rows", "band_block_medians", "read_row_slice", "BAND_ROWS"]

BAND_ROWS = 1024
"""Rows read at a time by the statistics pass (rounded to a multiple of the illumination block side)."""


def band_block_medians(crop: np.ndarray, size: int) -> np.ndarray:
    """Medians of the ``size`` x ``size`` blocks of a band, as :func:`~stainseg.groundtruth.illumination.block_medians` takes them.

    ``crop`` holds whole blocks (rows and columns multiples of ``size``); large blocks are first
    averaged 4 x 4, exactly as for the whole plane, so the bands' medians stacked are the whole plane's.

    Examples
    --------
    >>> from stainseg.groundtruth.illumination import block_medians
    >>> plane = np.random.default_rng(0).integers(0, 4000, (256, 320)).astype(np.uint16)
    >>> whole, _, _ = block_medians(plane, blocks=8)
    >>> bands = np.concatenate([band_block_medians(plane[y:y + 64], 32) for y in range(0, 256, 64)])
    >>> bool(np.array_equal(whole, bands))
    True
    """
    from stainseg.groundtruth.illumination import _mean4

    pre = 4 if size >= 16 and size % 4 == 0 else 1
    crop = _mean4(crop) if pre > 1 else crop.astype(np.float32, copy=False)
    inner = size // pre
    ny, nx = crop.shape[0] // inner, crop.shape[1] // inner
    tiles = crop[: ny * inner, : nx * inner].reshape(ny, inner, nx, inner).transpose(0, 2, 1, 3).reshape(ny, nx, inner * inner)
    return np.median(tiles, axis=-1).astype(np.float32)


@dataclass
class _Plane:
    """How one plane is prepared: its illumination field (or flat field) and its normalisation."""

    rows_y: Optional[np.ndarray] = None
    """(Y, grid) float32 ``full_y @ coef`` of the spline field scaled to mean 1 (None: no field)."""
    cols_x: Optional[np.ndarray] = None
    """(grid, X) float32 ``full_x.T``."""
    clamp_mean: Optional[np.float32] = None
    """Set when the field dips below 0.1: it is clamped there and divided by this (its whole-image mean)."""
    flat: Optional[np.ndarray] = None
    """(Y, X) stored flat field (``constant_illumination``)."""
    lo: Any = 0.0
    span: Any = 1.0
    median: Any = 0.0
    constant: bool = False
    """The normalised plane is all zeros (constant, or no contrast at all)."""

    def field(self, y0: int, y1: int) -> Optional[np.ndarray]:
        if self.rows_y is None:
            return None
        field = self.rows_y[y0:y1] @ self.cols_x
        if self.clamp_mean is not None:
            np.maximum(field, 0.1, out=field)
            field /= self.clamp_mean
        return field

    def correct(self, raw: np.ndarray, y0: int, out: np.ndarray) -> np.ndarray:
        """Illumination-corrected float32 rows ``[y0, y0 + n)`` of the plane (``raw`` float32) into ``out``."""
        if self.flat is not None:
            np.divide(raw, self.flat[y0:y0 + raw.shape[0]], out=out, casting="unsafe")
            return out
        field = self.field(y0, y0 + raw.shape[0])
        if field is None:
            out[...] = raw
        else:
            np.divide(raw, field, out=out)
        return out

    def normalise(self, out: np.ndarray) -> np.ndarray:
        """``clip((x - lo) / (hi - lo), 0, 1) - median`` in place, with the whole image's lo, hi and median."""
        if self.constant:
            out[...] = 0.0
            return out
        np.subtract(out, self.lo, out=out)
        np.divide(out, self.span, out=out)
        np.clip(out, 0.0, 1.0, out=out)
        out -= self.median
        return out


class PreparedRows:
    """The network input of a huge image, prepared on demand a band of rows at a time.

    ``rows(y0, y1)`` is float32 (C, n, X); ``self[:, y0:y1]`` too, so it can be handed to
    :func:`stainseg.segment.tiling.predict_tiled` as the image. Made by :func:`prepare_rows`.

    Attributes
    ----------
    shape : (C, Y, X)
    constant : bool
        Every raw plane is constant (an empty frame): the network need not run.
    """

    def __init__(self, source: ImageRows, planes: list[_Plane], constant: bool) -> None:
        self.source = source
        self.planes = planes
        self.shape = source.shape
        self.dtype = np.dtype(np.float32)
        self.constant = constant

    def rows(self, y0: int, y1: int) -> np.ndarray:
        raw = _as_float(self.source.rows(y0, y1), self.source.where)
        out = np.empty(raw.shape, np.float32)
        for c, plane in enumerate(self.planes):
            plane.normalise(plane.correct(raw[c], y0, out[c]))
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """``self[:, y0:y1]``, ``self[c, y0:y1, x0:x1]`` or ``self[..., y0:y1, x0:x1]`` (row slices of step 1)."""
        return read_row_slice(self, key)

    def __repr__(self) -> str:
        c, y, x = self.shape
        return f"PreparedRows({c} x {y} x {x}, {self.source.where})"


def read_row_slice(rows: Any, key: Any) -> np.ndarray:
    """``rows[key]`` for an object with ``shape`` (C, Y, X) and ``rows(y0, y1)``: ``[:, y0:y1]``, ``[c, y0:y1, x0:x1]``
    or ``[..., y0:y1, x0:x1]`` (row slices of step 1 only)."""
    key = key if isinstance(key, tuple) else (key,)
    if key[:1] == (Ellipsis,):
        key = (slice(None),) * (4 - len(key)) + key[1:]
    c_key, y_key, x_key = key + (slice(None),) * (3 - len(key))
    if not isinstance(y_key, slice) or y_key.step not in (None, 1):
        raise TypeError(f"{type(rows).__name__} is read by row slices of step 1")
    y0, y1, _ = y_key.indices(rows.shape[1])
    return rows.rows(y0, y1)[c_key, :, x_key]


def _as_float(raw: np.ndarray, where: str) -> np.ndarray:
    """float32 rows (as :func:`stainseg.io.images.as_float`): NaN or infinite pixels are a one-line error."""
    out = raw.astype(np.float32, copy=False)
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(out).all():
        raise StainsegError("image contains NaN or infinite pixels; fix or mask the input file", where)
    return out


def prepare_rows(source: ImageRows, settings: Preprocessing, band: int = BAND_ROWS) -> PreparedRows:
    """Collect the whole-image statistics of ``prepare`` in one pass over the bands of ``source``.

    Parameters
    ----------
    source : ImageRows
        The raw (C, Y, X) planes (:func:`stainseg.segment.rows.open_rows`).
    settings : Preprocessing
        The model's preprocessing (:attr:`stainseg.Model.preprocessing`).
    band : int
        Rows read at a time (rounded down to a multiple of the illumination block side; memory is
        about ``band x X x C x 8`` bytes).

    Returns
    -------
    PreparedRows
        ``rows(y0, y1)`` equals rows ``[y0, y1)`` of ``prepare(whole stack, settings)``.

    Examples
    --------
    >>> from stainseg.segment.rows import open_rows
    >>> prepared = prepare_rows(open_rows(np.ones((2, 64, 80)), 2), Preprocessing(illumination="none"))
    >>> prepared.constant, prepared.rows(0, 8).shape
    (True, (2, 8, 80))
    """
    from stainseg.groundtruth.illumination import FIT_BLOCKS, _basis, _fit_coefficients

    n_planes, height, width = source.shape
    spline = settings.illumination == "spline"
    flat = _usable_flat_field(np.broadcast_to(np.float32(0), source.shape), settings)  # type: ignore[arg-type]
    fit = spline and flat is None
    if fit and settings.spline_grid < 2:
        raise StainsegError(f"spline_grid must be at least 2 (got {settings.spline_grid}); fix the model's preprocessing "
                            "in MODEL/model.json")
    size = max(1, min(height, width) // FIT_BLOCKS)
    ny, nx = height // size, width // size
    sy, sx = _sample_step((height, width))
    step = max(size, (int(band) // size) * size)
    medians = np.empty((n_planes, ny, nx), np.float32)
    subsample: list[list[np.ndarray]] = [[] for _ in range(n_planes)]
    sub_rows: list[np.ndarray] = []
    low = np.full(n_planes, np.inf)
    high = np.full(n_planes, -np.inf)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        raw = _as_float(source.rows(y0, y1), source.where)
        low = np.minimum(low, raw.min(axis=(1, 2)))
        high = np.maximum(high, raw.max(axis=(1, 2)))
        b0, b1 = y0 // size, min(ny, y1 // size)
        first = -(-y0 // sy) * sy
        sub_rows.append(np.arange(first, y1, sy))
        for c in range(n_planes):
            if fit and b1 > b0:
                medians[c, b0:b1] = band_block_medians(raw[c, b0 * size - y0 : b1 * size - y0, : nx * size], size)
            subsample[c].append(raw[c, first - y0 :: sy, ::sx])
        del raw
    rows_index = np.concatenate(sub_rows)
    constant = bool(np.all(low == high))
    stats = settings.statistics if len(settings.statistics) == n_planes else []
    planes = []
    for c in range(n_planes):
        plane = _Plane(flat=None if flat is None else flat[c])
        if fit:
            yc = (np.arange(ny) + 0.5) * size - 0.5
            xc = (np.arange(nx) + 0.5) * size - 0.5
            _spline_field(plane, _fit_coefficients(medians[c], yc, xc, (height, width), settings.spline_grid,
                                                   settings.spline_iterations, 2.0), (height, width), _basis, step)
        sub = np.concatenate(subsample[c], axis=0)
        corrected = np.empty(sub.shape, np.float32)
        if plane.flat is not None:
            np.divide(sub, plane.flat[rows_index][:, ::sx], out=corrected, casting="unsafe")
        else:
            field = None
            if plane.rows_y is not None:
                field = (plane.rows_y[rows_index] @ plane.cols_x)[:, ::sx]
                if plane.clamp_mean is not None:
                    np.maximum(field, 0.1, out=field)
                    field /= plane.clamp_mean
            if field is None:
                corrected[...] = sub
            else:
                np.divide(sub, field, out=corrected)
        _normalisation(plane, corrected, stats[c] if stats else None, settings)
        planes.append(plane)
    return PreparedRows(source, planes, constant)


def _spline_field(plane: _Plane, coef: Optional[np.ndarray], shape: tuple[int, int], basis: Any, step: int) -> None:
    """Set the plane's field as :func:`stainseg.groundtruth.illumination._evaluate` makes it (normalised to mean 1)."""
    if coef is None:
        return  # a flat surface: the normalised field is all ones
    height, width = shape
    grid = coef.shape[0]
    full_y = basis(np.arange(height), height, grid)
    full_x = basis(np.arange(width), width, grid)
    mean = float(full_y.mean(axis=0) @ coef @ full_x.mean(axis=0))
    if not np.isfinite(mean) or mean <= 0:
        return
    coef = coef / mean
    plane.rows_y = (full_y @ coef).astype(np.float32)
    plane.cols_x = full_x.T.astype(np.float32)
    if float(coef.min()) < 0.1:  # the field is clamped at 0.1 and re-scaled to mean 1: its mean over every pixel
        total = 0.0
        for y0 in range(0, height, step):
            field = plane.rows_y[y0:y0 + step] @ plane.cols_x
            total += float(np.maximum(field, 0.1).sum(dtype=np.float64))
        plane.clamp_mean = np.float32(total / (height * width))


def _normalisation(plane: _Plane, corrected: np.ndarray, stats: Any, settings: Preprocessing) -> None:
    """lo, hi and the median of :func:`stainseg.preprocess.normalize_plane`, from the corrected subsample."""
    min_range, fixed = 0.0, None
    if stats is not None and stats.images and settings.normalization != "image":
        level = float(abs(np.median(corrected)))
        if settings.normalization == "hybrid":
            min_range = FLOOR_FRACTION * stats.min_relative_range * level
        else:
            fixed = (stats.relative_low * level, stats.relative_high * level)
    lo, hi = fixed if fixed is not None else np.percentile(corrected, [settings.low, settings.high])
    hi = max(float(hi), float(lo) + float(min_range))
    if not hi > lo:  # constant (or NaN) channel
        plane.constant = True
        return
    plane.lo, plane.span = lo, hi - lo
    norm = np.empty(corrected.shape, np.float32)
    np.subtract(corrected, lo, out=norm)
    np.divide(norm, hi - lo, out=norm)
    np.clip(norm, 0.0, 1.0, out=norm)
    plane.median = np.median(norm)
