"""Network input preparation (METHOD.md 2.1, 2.3, 5.1): the only implementation, used by training and segmentation.

A :class:`Preprocessing` is part of every model (``MODEL/model.json`` ``preprocessing``);
:meth:`stainseg.Model.prepare` calls :func:`prepare` with it, and training prepares its images
through the same method, so the two paths cannot drift apart.

Per plane: illumination correction (iterative spline background, METHOD 1.1), then
normalisation ``clip((x - lo) / (hi - lo), 0, 1) - median``. How ``lo`` and ``hi`` are chosen is
the ``normalization`` setting:

``"image"``
    the image's own 0.5th and 99.5th percentiles (stainseg 0.1, the paper's "scale to [0, 1]").
    An image with no objects is stretched to full range: its noise looks like cells.
``"hybrid"`` (default)
    the image's own percentiles, but the range ``hi - lo`` is never smaller than
    ``floor`` × the image's median level, where ``floor`` is half the smallest relative contrast
    (``(p99.5 - p0.5) / median``) of any training image of that channel. Normal fields are prepared
    exactly as in ``"image"``; a blank or noise-only field keeps its low contrast and stays dark to
    the network. Both are ratios, so a dimmer or brighter exposure of the same field (all
    intensities times a factor) is prepared identically.
``"training"``
    ``lo`` and ``hi`` are the training images' median relative percentiles times the image's median
    level: the contrast of every image is judged against the training set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import numpy as np

__all__ = ["Preprocessing", "ChannelStatistics", "prepare", "correct_plane", "channel_statistics",
           "normalize", "normalize_plane", "NORMALIZATIONS"]

NORMALIZATIONS = ("image", "hybrid", "training")
FLOOR_FRACTION = 0.5
"""Hybrid floor: this fraction of the smallest relative contrast among the training images."""


@dataclass
class ChannelStatistics:
    """Intensity statistics of one input plane over the training images, after illumination correction.

    Relative values are divided by each image's median (its background level for sparse
    fluorescence, its mean grey level for phase contrast and bright-field), so they do not
    depend on the exposure.
    """

    median: float = 0.0
    """Median over training images of the image median (corrected intensity units)."""
    relative_low: float = 0.0
    """Median over training images of p_low / median."""
    relative_high: float = 0.0
    """Median over training images of p_high / median."""
    min_relative_range: float = 0.0
    """Smallest (p_high - p_low) / median of any training image."""
    images: int = 0


@dataclass
class Preprocessing:
    """How a model prepares raw input planes; saved in ``model.json`` and applied by :func:`prepare`.

    Examples
    --------
    >>> p = Preprocessing(illumination="none", normalization="image")
    >>> prepare(np.arange(32.0).reshape(1, 4, 8), p).shape
    (1, 4, 8)
    """

    illumination: Literal["spline", "none"] = "spline"
    """Per-plane iterative spline background correction, or none."""
    spline_grid: int = 5
    spline_iterations: int = 5
    normalization: Literal["image", "hybrid", "training"] = "hybrid"
    low: float = 0.5
    high: float = 99.5
    statistics: list[ChannelStatistics] = field(default_factory=list)
    """One entry per input plane, from :func:`channel_statistics` on the training images."""
    constant_illumination: bool = False
    """Divide every plane by :attr:`flat_field` (estimated from the training images) instead of fitting a spline
    to each image: for a plate whose illumination does not change (``stainseg segment --constant-illumination``)."""
    downsample: int = 1
    """Working scale: the prepared planes are reduced by this integer factor (block means, :mod:`stainseg.scale`) as
    the last step; the network and the instance settings work at that scale. 1 = full resolution (the paper)."""
    flat_field: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    """(C, Y, X) float32 fields of mean 1 from the training images (:func:`stainseg.groundtruth.illumination.flat_field`),
    stored as ``MODEL/flat_field.npy``, not in ``model.json``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``preprocessing`` entry of ``model.json``; the flat field is a file of its own)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("flat_field", "constant_illumination")}
        data["statistics"] = [dataclasses.asdict(s) for s in self.statistics]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        data = dict(data)
        stats = [ChannelStatistics(**s) for s in data.pop("statistics", [])]
        return cls(**data, statistics=stats)


def _sample_step(shape: tuple[int, ...]) -> tuple[int, int]:
    """Row and column step of the ~512 x 512 subsample the percentiles and median are taken from."""
    return max(1, shape[0] // 512), max(1, shape[1] // 512)


def normalize_plane(plane: np.ndarray, out: np.ndarray | None = None, low: float = 0.5, high: float = 99.5,
                    min_range: float = 0.0, fixed: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Normalise one plane into ``out`` (float32; may be ``plane`` itself).

    ``clip((x - lo) / (hi - lo), 0, 1) - median``, the percentiles and median taken from a regular
    ~512 x 512 subsample (the same result to ~1e-3 as from every pixel, 10x faster).

    Parameters
    ----------
    plane : ndarray (Y, X)
    out : ndarray of float32, optional
    low, high : float
        Percentiles mapped to 0 and 1.
    min_range : float
        ``hi - lo`` is at least this (intensity units): a low-contrast plane stays dark.
    fixed : (lo, hi), optional
        Use these instead of the plane's percentiles.

    Examples
    --------
    >>> x = np.arange(100.0).reshape(10, 10)
    >>> round(float(normalize_plane(x).max()), 2)
    0.5
    """
    if out is None:
        out = np.empty(plane.shape, np.float32)
    sy, sx = _sample_step(plane.shape)
    lo, hi = fixed if fixed is not None else np.percentile(plane[::sy, ::sx], [low, high])
    hi = max(float(hi), float(lo) + float(min_range))
    if not hi > lo:  # constant (or NaN) channel
        out[...] = 0.0
        return out
    np.subtract(plane, lo, out=out)
    np.divide(out, hi - lo, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    out -= np.median(out[::sy, ::sx])
    return out


def normalize(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale each channel of a (C, Y, X) image to [0, 1] by its own robust percentiles, then subtract its median.

    This is ``normalization = "image"`` without illumination correction. A constant channel
    becomes all zeros.

    Examples
    --------
    >>> x = np.arange(16, dtype=float).reshape(1, 4, 4)
    >>> abs(float(np.median(normalize(x)))) < 1e-6
    True
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"normalize expects (C, Y, X), got shape {image.shape}")
    out = np.empty(image.shape, np.float32)
    for c, channel in enumerate(image):
        normalize_plane(channel, out[c], low, high)
    return out


def correct_plane(plane: np.ndarray, settings: Preprocessing, out: np.ndarray | None = None) -> np.ndarray:
    """Illumination correction of one raw plane as float32 (METHOD 1.1 / 2.1), into ``out``.

    Examples
    --------
    >>> correct_plane(np.ones((8, 8)), Preprocessing(illumination="none")).dtype
    dtype('float32')
    """
    if out is None:
        out = np.empty(np.shape(plane), np.float32)
    if settings.illumination == "spline":
        from stainseg.groundtruth.illumination import background_field

        field_ = background_field(plane, settings.spline_grid, settings.spline_iterations)
        np.divide(plane, field_, out=out)
    else:
        out[...] = plane
    return out


def _level(plane: np.ndarray) -> float:
    sy, sx = _sample_step(plane.shape)
    return float(abs(np.median(plane[::sy, ::sx])))


def channel_statistics(corrected: Sequence[np.ndarray], low: float = 0.5, high: float = 99.5) -> list[ChannelStatistics]:
    """Per-plane statistics of illumination-corrected (C, Y, X) training images.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stats = channel_statistics([rng.gamma(2, 50, (1, 64, 64)) for _ in range(3)])
    >>> stats[0].images, stats[0].min_relative_range > 0
    (3, True)
    """
    if not corrected:
        return []
    n = corrected[0].shape[0]
    out = []
    for c in range(n):
        rows = []
        for image in corrected:
            plane = image[c]
            sy, sx = _sample_step(plane.shape)
            lo, hi = np.percentile(plane[::sy, ::sx], [low, high])
            level = _level(plane)
            if level > 0 and np.isfinite(level):
                rows.append((level, lo / level, hi / level, (hi - lo) / level))
        if not rows:
            out.append(ChannelStatistics(images=0))
            continue
        arr = np.asarray(rows, np.float64)
        out.append(ChannelStatistics(median=float(np.median(arr[:, 0])), relative_low=float(np.median(arr[:, 1])),
                                     relative_high=float(np.median(arr[:, 2])), min_relative_range=float(arr[:, 3].min()),
                                     images=len(rows)))
    return out


def _usable_flat_field(stack: np.ndarray, settings: Preprocessing) -> Optional[np.ndarray]:
    """The stored flat field when ``constant_illumination`` asks for it (one-line error when it cannot be used)."""
    if not settings.constant_illumination or settings.illumination != "spline":
        return None
    from stainseg.errors import StainsegError

    flat = settings.flat_field
    if flat is None:
        raise StainsegError("constant illumination was asked for but the model has no flat field (MODEL/flat_field.npy; "
                            "models trained on images of one size have one); segment without --constant-illumination")
    if flat.shape != stack.shape:
        raise StainsegError(f"the model's flat field is {flat.shape[1]} x {flat.shape[2]} px for {flat.shape[0]} plane(s), the image "
                            f"{stack.shape[1]} x {stack.shape[2]} px for {stack.shape[0]}; segment without --constant-illumination")
    return flat


def prepare(stack: np.ndarray, settings: Preprocessing) -> np.ndarray:
    """Network input from raw planes: illumination correction, normalisation, then the working scale (float32).

    With ``settings.downsample = f > 1`` the result is ``(C, ceil(Y / f), ceil(X / f))``
    (:func:`stainseg.scale.downsample_planes`).

    Parameters
    ----------
    stack : ndarray, shape (C, Y, X)
        Raw input planes (every z-plane of every input channel), any real dtype.
    settings : Preprocessing
        The model's preprocessing (its statistics are needed for ``"hybrid"`` and ``"training"``;
        without statistics both behave as ``"image"``).

    Returns
    -------
    ndarray of float32, shape (C, Y, X) (at the working scale)

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.gamma(2.0, 40.0, (1, 64, 64))
    >>> p = Preprocessing(illumination="none", normalization="hybrid", statistics=channel_statistics([x]))
    >>> bool(np.allclose(prepare(x, p), prepare(x / 10, p), atol=1e-5))
    True
    """
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"prepare expects (C, Y, X), got shape {stack.shape}")
    out = np.empty(stack.shape, np.float32)
    stats = settings.statistics if len(settings.statistics) == stack.shape[0] else []
    flat = _usable_flat_field(stack, settings)
    for c, plane in enumerate(stack):
        if flat is not None:
            np.divide(plane, flat[c], out=out[c], casting="unsafe")
        else:
            correct_plane(plane, settings, out[c])
        min_range, fixed = 0.0, None
        if stats and stats[c].images and settings.normalization != "image":
            level = _level(out[c])
            if settings.normalization == "hybrid":
                min_range = FLOOR_FRACTION * stats[c].min_relative_range * level
            else:
                fixed = (stats[c].relative_low * level, stats[c].relative_high * level)
        normalize_plane(out[c], out[c], settings.low, settings.high, min_range=min_range, fixed=fixed)
    if settings.downsample > 1:
        from stainseg.scale import downsample_planes

        out = downsample_planes(out, settings.downsample)
    return out
