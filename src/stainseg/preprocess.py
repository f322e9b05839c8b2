"""Normalisation shared by training and segmentation (METHOD.md 2.3 and 5.1): one function, both paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stainseg.config import ExperimentConfig


def _sample_step(shape: tuple[int, ...]) -> tuple[int, int]:
    """Row and column step of the ~512 x 512 subsample the percentiles and median are taken from."""
    return max(1, shape[0] // 512), max(1, shape[1] // 512)


def normalize_plane(plane: np.ndarray, out: np.ndarray | None = None, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Normalise one plane as :func:`normalize` does, into ``out`` (float32; may be ``plane`` itself).

    ``clip((x - p_low) / (p_high - p_low), 0, 1) - median``, the percentiles and the median taken
    from a regular ~512 x 512 subsample (the same result to ~1e-3 as from every pixel, 10x
    faster). Every full-size step runs in place, so a plane costs four passes over its pixels.
    """
    if out is None:
        out = np.empty(plane.shape, np.float32)
    sy, sx = _sample_step(plane.shape)
    lo, hi = np.percentile(plane[::sy, ::sx], [low, high])
    if not hi > lo:  # constant (or NaN) channel
        out[...] = 0.0
        return out
    np.subtract(plane, lo, out=out)
    np.divide(out, hi - lo, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    out -= np.median(out[::sy, ::sx])
    return out


def normalize(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale each channel to [0, 1] by robust percentiles, then subtract its median.

    Parameters
    ----------
    image : ndarray, shape (C, Y, X)
        Illumination-corrected input channels (any real dtype).
    low, high : float
        Percentiles mapped to 0 and 1 (min/max are too sensitive to hot pixels); values
        outside are clipped.

    Returns
    -------
    ndarray of float32, shape (C, Y, X)
        Per channel: ``clip((x - p_low) / (p_high - p_low), 0, 1) - median``. A constant
        channel becomes all zeros.

    Examples
    --------
    >>> x = np.arange(16, dtype=float).reshape(1, 4, 4)
    >>> float(np.median(normalize(x)))
    0.0
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"normalize expects (C, Y, X), got shape {image.shape}")
    out = np.empty(image.shape, np.float32)
    for c, channel in enumerate(image):
        normalize_plane(channel, out[c], low, high)
    return out


def prepare_input(stack: np.ndarray, cfg: "ExperimentConfig") -> np.ndarray:
    """Network input from raw channels (METHOD 2.1, 2.3, 5.1): illumination correction of every plane, then :func:`normalize`.

    The same function serves training and segmentation, so the two can never drift apart.
    Each plane is corrected and normalised in one float32 buffer (no intermediate stacks).

    Parameters
    ----------
    stack : ndarray, shape (C, Y, X)
        Raw input planes (every z-plane of every input channel), any real dtype.
    cfg : ExperimentConfig
        ``cfg.groundtruth.illumination`` ("spline" fits every plane; "plate" and "none" leave the
        input as it is: a plate function is for the stains) and the spline settings.
    """
    from stainseg.groundtruth.illumination import background_field

    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"prepare_input expects (C, Y, X), got shape {stack.shape}")
    out = np.empty(stack.shape, np.float32)
    spline = cfg.groundtruth.illumination == "spline"
    for c, plane in enumerate(stack):
        if spline:
            field = background_field(plane, cfg.groundtruth.spline_grid, cfg.groundtruth.spline_iterations)
            np.divide(plane, field, out=out[c])
        else:
            out[c] = plane
        normalize_plane(out[c], out[c])
    return out
