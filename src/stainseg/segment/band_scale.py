"""The working scale on the block-wise path: prepared rows reduced by block means, results repeated back, band by band.

A model with ``preprocessing.downsample = f > 1`` (:mod:`stainseg.scale`) segments a huge image
block-wise exactly as it segments one in memory: :class:`ScaledRows` gives the rows of
``downsample_planes(prepare(whole image), f)`` from the full-resolution prepared rows, the network
and the instance step run on those, and :func:`upsample_rows` writes the labels (and a kept
probability or uncertainty map) back at the input's size, one band at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stainseg.scale import downsample_planes, upsample, working_shape
from stainseg.segment.band_prepare import read_row_slice

__all__ = ["ScaledRows", "upsample_rows"]


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


def upsample_rows(small: Any, out: Any, factor: int, band: int) -> None:
    """Write ``(..., y, x)`` working-scale ``small`` into ``(..., Y, X)`` ``out``, each value repeated over its block.

    Reads and writes ``band`` working-scale rows at a time (zarr or numpy on either side).

    Examples
    --------
    >>> out = np.zeros((3, 5), np.int32)
    >>> upsample_rows(np.array([[1, 2, 3], [4, 5, 6]]), out, 2, band=1)
    >>> out
    array([[1, 1, 2, 2, 3],
           [1, 1, 2, 2, 3],
           [4, 4, 5, 5, 6]], dtype=int32)
    """
    f = int(factor)
    height, width = int(out.shape[-2]), int(out.shape[-1])
    for y0 in range(0, int(small.shape[-2]), band):
        y1 = min(y0 + band, int(small.shape[-2]))
        rows = min(y1 * f, height) - y0 * f
        out[..., y0 * f:y0 * f + rows, :] = upsample(np.asarray(small[..., y0:y1, :]), f, (rows, width))
