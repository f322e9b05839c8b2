"""Class-balance weight images for the weighted softmax loss (METHOD.md 2.4).

Background and foreground pixels each get the same total weight (half of the pixel count), then
foreground pixels are multiplied by an extra factor. The paper used a fixed factor of 3 and noted
that it depends on cell density and "could be automatically determined" from the fraction of the
image covered by cells; :func:`auto_foreground_factor` is that rule.
"""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_weights", "auto_foreground_factor", "foreground_factor", "class_weight_image"]


def balanced_weights(foreground: np.ndarray) -> np.ndarray:
    """Weight image in which background and foreground each sum to half the pixel count.

    Parameters
    ----------
    foreground : ndarray of bool, shape (Y, X)
        True on cells (any class other than background).

    Returns
    -------
    ndarray of float32, shape (Y, X)
        ``N / (2 * n_fg)`` on foreground and ``N / (2 * n_bg)`` on background (mean weight 1).
        An image with only one class gets weight 1 everywhere.

    Examples
    --------
    >>> w = balanced_weights(np.array([[True, False, False, False]]))
    >>> float(w[0, 0]), float(w[0, 1:].sum())
    (2.0, 2.0)
    """
    foreground = np.asarray(foreground, dtype=bool)
    total = foreground.size
    n_fg = int(foreground.sum())
    n_bg = total - n_fg
    if n_fg == 0 or n_bg == 0:
        return np.ones(foreground.shape, np.float32)
    return np.where(foreground, total / (2.0 * n_fg), total / (2.0 * n_bg)).astype(np.float32)


def auto_foreground_factor(foreground_fraction: float, low: float = 1.0, high: float = 5.0) -> float:
    """Extra foreground weight derived from the fraction of the image covered by cells.

    ``factor = clip(sqrt((1 - p) / p), low, high)`` with ``p`` the foreground fraction. It is 1 for
    confluent images (p >= 0.5: foreground is not the minority, so nothing to compensate), 3 at
    p = 0.1 (the paper's fixed value, for sparse cells) and grows slowly (square root of the
    background : foreground odds) for sparser images, capped at ``high``.

    Parameters
    ----------
    foreground_fraction : float
        Fraction of labelled pixels that are foreground, in [0, 1].
    low, high : float
        Bounds of the factor.

    Examples
    --------
    >>> auto_foreground_factor(0.1), auto_foreground_factor(0.6), auto_foreground_factor(0.001)
    (3.0, 1.0, 5.0)
    """
    p = float(np.clip(foreground_fraction, 1e-6, 1.0))
    return float(np.clip(np.sqrt((1.0 - p) / p), low, high))


def foreground_factor(setting: float | str, foreground_fraction: float) -> float:
    """The factor to use: ``setting`` itself when it is a number, :func:`auto_foreground_factor` for ``"auto"``.

    Examples
    --------
    >>> foreground_factor("auto", 0.1), foreground_factor(2, 0.1)
    (3.0, 2.0)
    """
    if setting == "auto":
        return auto_foreground_factor(foreground_fraction)
    return float(setting)


def class_weight_image(foreground: np.ndarray, factor: float) -> np.ndarray:
    """:func:`balanced_weights` with the foreground multiplied by ``factor`` (METHOD.md 2.4).

    Examples
    --------
    >>> import numpy as np
    >>> fg = np.zeros((10, 10), bool); fg[:, :2] = True          # 20 % foreground
    >>> w = class_weight_image(fg, factor=3.0)
    >>> float(w[0, 0]), float(w[0, 5])                        # each class half the weight, foreground x 3
    (7.5, 0.625)
    """
    foreground = np.asarray(foreground, dtype=bool)
    weights = balanced_weights(foreground)
    weights[foreground] *= np.float32(factor)
    return weights
