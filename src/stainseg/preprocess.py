"""Normalisation shared by training and segmentation (METHOD.md 2.3 and 5.1): one function, both paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stainseg.config import ExperimentConfig


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
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"normalize expects (C, Y, X), got shape {image.shape}")
    out = np.empty_like(image)
    for c, channel in enumerate(image):
        # subsample large images for the percentiles: same result to ~1e-3, 10x faster
        sample = channel[:: max(1, channel.shape[0] // 512), :: max(1, channel.shape[1] // 512)]
        lo, hi = np.percentile(sample, [low, high])
        if hi <= lo:
            out[c] = 0.0
            continue
        scaled = np.clip((channel - lo) / (hi - lo), 0.0, 1.0)
        out[c] = scaled - np.median(scaled[:: max(1, channel.shape[0] // 512), :: max(1, channel.shape[1] // 512)])
    return out


def prepare_input(stack: np.ndarray, cfg: "ExperimentConfig") -> np.ndarray:
    """Network input from raw channels (METHOD 2.1, 2.3, 5.1): illumination correction of every plane, then :func:`normalize`.

    The same function serves training and segmentation, so the two can never drift apart.

    Parameters
    ----------
    stack : ndarray, shape (C, Y, X)
        Raw input planes (every z-plane of every input channel), float.
    cfg : ExperimentConfig
        ``cfg.groundtruth.illumination`` ("spline" fits every plane; "plate" and "none" leave the
        input as it is: a plate function is for the stains) and the spline settings.
    """
    from stainseg.groundtruth.illumination import correct_illumination

    stack = np.asarray(stack, dtype=np.float32)
    if cfg.groundtruth.illumination == "spline":
        stack, _ = correct_illumination(stack, grid=cfg.groundtruth.spline_grid, iterations=cfg.groundtruth.spline_iterations)
    return normalize(stack)
