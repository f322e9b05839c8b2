"""The working scale: a model may see its images reduced by an integer factor (``[preprocess] downsample``).

Cellpose rescales every image to a fixed object diameter and nnU-Net picks its target spacing from
the training data; stainseg does the same with an integer factor ``f`` stored in the model
(``preprocessing.downsample``). With ``downsample = "auto"`` training chooses the largest ``f`` that
keeps the median diameter of the training objects at :data:`MIN_WORKING_DIAMETER` px or more
(at most :data:`MAX_DOWNSAMPLE`); ``1``, the default, is the paper's full resolution. Nuclei of 29-34 px
(BBBC039, BBBC022, the deepcell and isl fields at their resolutions) are halved by ``"auto"``; on real
data that kept the accuracy against manual masks on BBBC039, raised it for 3T3 nuclei from phase
contrast and lowered it by 3.6 points for HeLa cells grown from nuclei on two seeds (``docs/results.md``,
"Working scale").

- The prepared planes are reduced by ``f x f`` block means (:func:`downsample_planes`, the last step
  of :func:`stainseg.preprocess.prepare`): the network, the tiles and the instance settings all work
  at ``1 / f`` of the resolution, so inference costs about ``1 / f**2``.
- Training labels are sampled once per block (:func:`downsample_labels`), so the labels and the
  block means cover the same pixels.
- The probabilities of a segmentation are interpolated back to the input's pixels (:func:`upsample_linear`),
  and its objects are drawn there along them (:mod:`stainseg.segment.upscale`); every output keeps the
  input's shape.

Sides that are not a multiple of ``f`` are padded by repeating the edge, and the padding is cut
off again by :func:`upsample`.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["working_downsample", "downsample_planes", "downsample_labels", "upsample", "upsample_linear", "working_shape",
           "MIN_WORKING_DIAMETER", "MAX_DOWNSAMPLE"]

#: ``downsample = "auto"`` keeps the median object diameter at this many px or more at the working scale
#: (Cellpose's nuclei model works at 17 px; below about 14 px touching nuclei of the paper's network
#: blur into each other at its 8-px pooling grid).
MIN_WORKING_DIAMETER = 14.0
#: The largest factor ``"auto"`` chooses.
MAX_DOWNSAMPLE = 4


def working_downsample(diameter: Optional[float]) -> int:
    """The factor ``"auto"`` chooses for training objects of median ``diameter`` px: ``floor(diameter / 14)``, 1 to 4.

    Examples
    --------
    >>> working_downsample(30.3), working_downsample(14.4), working_downsample(27.9), working_downsample(None)
    (2, 1, 1, 1)
    """
    if diameter is None or not math.isfinite(float(diameter)) or diameter <= 0:
        return 1
    return int(max(1, min(MAX_DOWNSAMPLE, math.floor(float(diameter) / MIN_WORKING_DIAMETER))))


def working_shape(shape: tuple[int, ...], factor: int) -> tuple[int, int]:
    """The (Y, X) shape of an image of ``shape`` (last two axes) at ``1 / factor`` (sides rounded up).

    Examples
    --------
    >>> working_shape((3, 521, 696), 2)
    (261, 348)
    """
    return -(-int(shape[-2]) // factor), -(-int(shape[-1]) // factor)


def _padded(array: np.ndarray, factor: int) -> np.ndarray:
    pad_y, pad_x = (-array.shape[-2]) % factor, (-array.shape[-1]) % factor
    if not (pad_y or pad_x):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 2) + [(0, pad_y), (0, pad_x)], mode="edge")


def downsample_planes(planes: np.ndarray, factor: int) -> np.ndarray:
    """``(..., Y, X)`` float planes reduced by ``factor x factor`` block means: ``(..., ceil(Y / f), ceil(X / f))`` float32.

    Examples
    --------
    >>> downsample_planes(np.arange(16, dtype=np.float32).reshape(1, 4, 4), 2)[0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    if factor == 1:
        return planes
    x = _padded(np.asarray(planes, np.float32), factor)
    ny, nx = x.shape[-2] // factor, x.shape[-1] // factor
    blocks = x.reshape(x.shape[:-2] + (ny, factor, nx, factor))
    out = blocks.sum(axis=(-3, -1), dtype=np.float32)
    out *= np.float32(1.0 / (factor * factor))
    return out


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """``(Y, X)`` instance labels at ``1 / factor``: one sample per ``factor x factor`` block (its top-left pixel).

    :func:`upsample` of the result repeats each sample over its block, so a label image comes back
    with its boundaries within ``factor - 1`` px. Objects smaller than a block may vanish.

    Examples
    --------
    >>> lab = np.zeros((5, 6), np.int32); lab[1:5, 2:6] = 7
    >>> downsample_labels(lab, 2)
    array([[0, 0, 0],
           [0, 7, 7],
           [0, 7, 7]], dtype=int32)
    """
    if factor == 1:
        return labels
    return np.ascontiguousarray(_padded(np.asarray(labels), factor)[..., ::factor, ::factor])


def upsample(array: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """``(..., y, x)`` at the working scale repeated back to the input's (Y, X) ``shape`` (last two axes; nearest, cropped).

    Examples
    --------
    >>> upsample(np.array([[1, 2], [3, 4]]), 2, (3, 4))
    array([[1, 1, 2, 2],
           [1, 1, 2, 2],
           [3, 3, 4, 4]])
    """
    if factor == 1:
        return array
    height, width = int(shape[-2]), int(shape[-1])
    if (array.shape[-2], array.shape[-1]) != working_shape((height, width), factor):
        raise ValueError(f"an array of shape {array.shape} is not a {height} x {width} image at 1/{factor}")
    out = np.repeat(np.repeat(array, factor, axis=-2), factor, axis=-1)
    return np.ascontiguousarray(out[..., :height, :width])


def _linear_axis(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """``a`` ``factor`` times longer along ``axis`` (< 0): linear between block centres, the edge values held."""
    def at(index: slice | int) -> tuple:
        return (Ellipsis, index) + (slice(None),) * (-1 - axis)

    shape = list(a.shape)
    shape[axis] *= factor
    out = np.empty(shape, np.float32)
    for p in range(factor):
        d = (p + 0.5) / factor - 0.5  # where the new pixel's centre lies, in old pixels from the old centre
        w = np.float32(abs(d))
        target = out[at(slice(p, None, factor))]
        np.multiply(a, np.float32(1.0) - w, out=target)
        if d < 0:  # between the previous centre and this one (the first pixel holds the edge value)
            target[at(slice(1, None))] += w * a[at(slice(None, -1))]
            target[at(0)] += w * a[at(0)]
        else:
            target[at(slice(None, -1))] += w * a[at(slice(1, None))]
            target[at(-1)] += w * a[at(-1)]
    return out


def upsample_linear(array: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """``(..., y, x)`` float maps at the working scale back to the input's (Y, X) ``shape`` by bilinear interpolation.

    Each working pixel is the mean of an ``f x f`` block, so its value sits at the block's centre;
    the full-resolution pixels in between are interpolated linearly (the edge values are held). This
    is ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``. Probabilities
    come back smooth instead of in ``f x f`` steps, and a threshold on them gives outlines at
    full resolution (:func:`stainseg.segment.upscale.refine_labels`).

    Examples
    --------
    >>> upsample_linear(np.array([[0.0, 1.0]], np.float32), 2, (2, 4))
    array([[0.  , 0.25, 0.75, 1.  ],
           [0.  , 0.25, 0.75, 1.  ]], dtype=float32)
    """
    if factor == 1:
        return array
    height, width = int(shape[-2]), int(shape[-1])
    if (array.shape[-2], array.shape[-1]) != working_shape((height, width), factor):
        raise ValueError(f"an array of shape {array.shape} is not a {height} x {width} image at 1/{factor}")
    out = _linear_axis(_linear_axis(np.asarray(array, np.float32), factor, -2), factor, -1)
    return np.ascontiguousarray(out[..., :height, :width])
