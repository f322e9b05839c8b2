"""The working scale on the block-wise path: prepared rows reduced by block means, results drawn back, band by band.

A model with ``preprocessing.downsample = f > 1`` (:mod:`stainseg.scale`) segments a huge image
block-wise exactly as it segments one in memory: :class:`ScaledRows` gives the rows of
``downsample_planes(prepare(whole image), f)`` from the full-resolution prepared rows, the network
and the instance step run on those, :func:`refine_rows` draws the objects at the input's size
(:mod:`stainseg.segment.upscale`) and :func:`upsample_linear_rows` interpolates a kept probability
or uncertainty map back, one band at a time.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from stainseg.scale import downsample_planes, upsample_linear, working_shape
from stainseg.segment.band_objects import bands
from stainseg.segment.band_prepare import read_row_slice
from stainseg.segment.upscale import foreground_of, refine_halo, refine_labels

__all__ = ["ScaledRows", "upsample_linear_rows", "refine_rows"]


class ScaledRows:
    """Rows of a prepared (C, Y, X) image (:class:`stainseg.segment.band_prepare.PreparedRows`) at ``1 / factor``.

    Row ``i`` is the block mean of full-resolution rows ``[i f, (i + 1) f)``; the last block of a
    side that is not a multiple of ``f`` repeats the image's edge, as :func:`downsample_planes` does
    on the whole image.

    Examples
    --------
    >>> full = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    >>> small = ScaledRows(full, 2)
    >>> small.shape, bool(np.allclose(small[:, 1:3], downsample_planes(full, 2)[:, 1:3]))
    ((2, 3, 3), True)
    """

    def __init__(self, prepared: Any, factor: int) -> None:
        self.prepared, self.factor = prepared, int(factor)
        channels, height, width = prepared.shape
        self.full_height = int(height)
        self.shape = (int(channels),) + working_shape((height, width), self.factor)
        self.dtype = np.dtype(np.float32)
        self.constant = bool(getattr(prepared, "constant", False))

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` at the working scale, (C, y1 - y0, X / f) float32."""
        f = self.factor
        full = np.asarray(self.prepared[:, y0 * f:min(y1 * f, self.full_height)], np.float32)
        return downsample_planes(full, f)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``self[:, y0:y1]``, ``self[c, y0:y1, x0:x1]`` or ``self[..., y0:y1, x0:x1]`` (row slices of step 1)."""
        return read_row_slice(self, key)


def _core(full: np.ndarray, y0: int, y1: int, e0: int, factor: int, height: int) -> np.ndarray:
    """The full-resolution rows of working rows ``[y0, y1)`` out of a band computed from working row ``e0``."""
    top = (y0 - e0) * factor
    return full[..., top:top + min(y1 * factor, height) - y0 * factor, :]


def upsample_linear_rows(small: Any, out: Any, factor: int, band: int) -> None:
    """Write ``(..., y, x)`` working-scale maps into ``(..., Y, X)`` ``out``, interpolated bilinearly, ``band`` rows at a time.

    The same values as :func:`stainseg.scale.upsample_linear` on the whole map (each band reads one
    working row beyond its edges). zarr or numpy on either side.

    Examples
    --------
    >>> small = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    >>> out = np.zeros((10, 6), np.float32)
    >>> upsample_linear_rows(small, out, 2, band=2)
    >>> bool(np.array_equal(out, upsample_linear(small, 2, (10, 6))))
    True
    """
    f = int(factor)
    height, width = int(out.shape[-2]), int(out.shape[-1])
    for y0, y1, e0, e1 in bands(int(small.shape[-2]), band, 1):
        full = upsample_linear(np.asarray(small[..., e0:e1, :], np.float32), f, (min(e1 * f, height) - e0 * f, width))
        out[..., y0 * f:min(y1 * f, height), :] = _core(full, y0, y1, e0, f, height)


def refine_rows(small: Any, prob: Any, out: Any, factor: int, objects: int, threshold: float, dilation: int = 1,
                smoothing: Optional[float] = None, band: int = 1024) -> int:
    """Working-scale labels ``small`` (not dilated) drawn into full-size ``out`` band by band; returns the object count.

    Each band is :func:`stainseg.segment.upscale.refine_labels` on the band and
    :func:`stainseg.segment.upscale.refine_halo` rows around it, so ``out`` holds what the whole
    label image would give. When an object vanished (every one of its pixels below the threshold
    after interpolation) the labels are numbered 1..n again in a second pass.

    Parameters
    ----------
    small : array, shape (y, x)
        Instance labels 1..``objects`` at the working scale (numpy or zarr).
    prob : array, shape (K, y, x)
        The probability map they were found on.
    out : array, shape (Y, X)
        The full-resolution label array to write (numpy or zarr).
    factor, objects, threshold, dilation, smoothing
        The working scale, the number of objects in ``small`` and the model's instance settings.
    band : int
        Working-scale rows per band.

    Examples
    --------
    >>> prob = np.zeros((2, 40, 30), np.float32); prob[0] = 1
    >>> for y, x in ((5, 5), (22, 14), (33, 24)):
    ...     prob[:, y:y + 5, x:x + 4] = [[[0.2]], [[0.8]]]
    >>> from scipy import ndimage as ndi
    >>> small, _ = ndi.label(prob[1] > 0.5)
    >>> out = np.zeros((80, 60), np.int32)
    >>> refine_rows(small, prob, out, 2, 3, 0.5, dilation=3, band=8)
    3
    >>> bool(np.array_equal(out, refine_labels(small, foreground_of(prob), 2, (80, 60), 0.5, 3)))
    True
    """
    f = int(factor)
    height, width = int(out.shape[-2]), int(out.shape[-1])
    present = np.zeros(int(objects) + 1, bool)
    for y0, y1, e0, e1 in bands(int(small.shape[-2]), band, refine_halo(dilation, smoothing)):
        labels = np.asarray(small[e0:e1])
        foreground = foreground_of(np.asarray(prob[:, e0:e1], np.float32), smoothing)
        full = refine_labels(labels, foreground, f, (min(e1 * f, height) - e0 * f, width), threshold, dilation, relabel=False)
        core = _core(full, y0, y1, e0, f, height)
        out[y0 * f:min(y1 * f, height)] = core
        present |= np.bincount(core.ravel(), minlength=present.size)[:present.size] > 0
    present[0] = False
    count = int(present.sum())
    if count < objects:  # number 1..n again (order kept, so every tie went the same way)
        lut = np.zeros(int(objects) + 1, np.int64)
        lut[present] = np.arange(1, count + 1)
        for y0 in range(0, height, band * f):
            y1 = min(y0 + band * f, height)
            out[y0:y1] = lut[np.asarray(out[y0:y1])]
    return count
