"""Streaming helpers of the tiled inference: read tile rows of an input band by band, write output rows in chunk-aligned blocks.

Only the rows of the tiles in flight are read from the input (numpy, zarr, or anything with numpy
slicing), and finished output rows are written to ``out`` in blocks aligned to its chunks, so a
zarr output is written once per chunk row. Used by :func:`stainseg.segment.tiling.predict_tiled`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]
"""``f(batch (N, C, t, t) float32) -> (N, K, t, t)`` float32 probabilities."""


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside ``[0, size)`` back inside by mirror reflection (numpy's ``"reflect"``).

    Works for any distance outside, also when it exceeds ``size`` (repeated reflection).

    Examples
    --------
    >>> reflect_index(np.arange(-2, 6), 4).tolist()
    [2, 1, 0, 1, 2, 3, 2, 1]
    """
    index = np.asarray(index, dtype=np.int64)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


def _read_rows(image: Any, rows: np.ndarray, two_d: bool) -> np.ndarray:
    """Read the given (reflected, in-range) rows of an array as float32 (C, len(rows), X)."""
    lo, hi = int(rows.min()), int(rows.max()) + 1
    block = image[lo:hi] if two_d else image[:, lo:hi]
    block = np.asarray(block, dtype=np.float32)
    if two_d:
        block = block[None]
    if np.array_equal(rows, np.arange(lo, hi)):
        return block
    return block[:, rows - lo]


def _reflect_slice(block: np.ndarray, start: int, size: int) -> np.ndarray:
    """Columns ``[start, start + size)`` of ``block`` (last axis), mirrored beyond its edges."""
    width = block.shape[-1]
    lo, hi = max(start, 0), min(start + size, width)
    left, right = lo - start, start + size - hi
    if left == 0 and right == 0:
        return block[..., lo:hi]
    if left < width and right < width and hi > lo:
        return np.pad(block[..., lo:hi], [(0, 0)] * (block.ndim - 1) + [(left, right)], mode="reflect")
    return block[..., reflect_index(np.arange(start, start + size), width)]


def _band_rows(start: int, size: int, height: int) -> np.ndarray:
    return reflect_index(np.arange(start, start + size), height)


def tiles_of_row(
    image: Any, two_d: bool, shape: tuple[int, int], origin_y: int, origin_x0: int, n_cols: int, tile_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(column index, tile (C, t, t))`` for one tile row starting at (origin_y, origin_x0).

    Only the ``tile_size`` rows of that tile row are read from ``image``; rows and columns outside
    the image are mirrored (:func:`reflect_index`).

    Examples
    --------
    >>> image = np.arange(30, dtype=np.float32).reshape(5, 6)
    >>> [(j, tile.shape) for j, tile in tiles_of_row(image, True, (5, 6), -2, -2, 2, 4)]
    [(0, (1, 4, 4)), (1, (1, 4, 4))]
    """
    height, width = shape
    band = _read_rows(image, _band_rows(origin_y, tile_size, height), two_d)
    band = _reflect_slice(band, origin_x0, n_cols * tile_size)
    for j in range(n_cols):
        yield j, band[:, :, j * tile_size : (j + 1) * tile_size]


class RowWriter:
    """Collect finished output rows and write them to ``out`` in blocks aligned to its chunks.

    ``add(y0, rows (..., n, X), final)`` keeps the rows until a block of ``block_rows`` rows (or,
    with ``final``, the rest) is complete, then writes it to ``out`` (K, Y, X) or (Y, X).

    Examples
    --------
    >>> out = np.zeros((5, 3), np.float32)
    >>> writer = RowWriter(out, block_rows=4)
    >>> writer.add(0, np.ones((2, 3), np.float32)); float(out.sum())
    0.0
    >>> writer.add(2, np.ones((3, 3), np.float32), final=True); float(out.sum())
    15.0
    """

    def __init__(self, out: Any, block_rows: int) -> None:
        self.out = out
        self.block_rows = max(1, block_rows)
        self.pending: list[tuple[int, np.ndarray]] = []
        self.start = 0

    def add(self, y0: int, rows: np.ndarray, final: bool = False) -> None:
        self.pending.append((y0, rows))
        end = y0 + rows.shape[-2]
        if final or end // self.block_rows > self.start // self.block_rows:
            self.flush(end if final else (end // self.block_rows) * self.block_rows)

    def flush(self, upto: int) -> None:
        if not self.pending or upto <= self.start:
            return
        if len(self.pending) == 1:
            data = self.pending[0][1]
        else:
            data = np.concatenate([r for _, r in self.pending], axis=-2)
        first = self.pending[0][0]
        n = upto - first
        if data.ndim == 3:
            self.out[:, first:upto] = data[:, :n]
        else:
            self.out[first:upto] = data[:n]
        rest = data[..., n:, :]
        self.pending = [(upto, rest)] if rest.shape[-2] else []
        self.start = upto


def _chunk_rows(array: Any, axis: int) -> int:
    chunks = getattr(array, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) > axis and isinstance(chunks[axis], int):
        return chunks[axis]
    return 1


def start_outputs(results: dict[str, Any], writers: dict[str, "RowWriter"], k: int, shape: tuple[int, int], want_unc: bool) -> None:
    """Allocate (or check) the outputs once the number of classes is known, and their row writers.

    ``results`` holds ``prob`` (K, Y, X) and ``unc`` (Y, X), each an array to write into or None
    (allocated here); ``writers`` gets a :class:`RowWriter` for each, in blocks of its chunk rows.

    Examples
    --------
    >>> results, writers = {"prob": None, "unc": None}, {}
    >>> start_outputs(results, writers, 2, (4, 5), want_unc=True)
    >>> results["prob"].shape, results["unc"].shape, sorted(writers)
    ((2, 4, 5), (4, 5), ['prob', 'unc'])
    """
    height, width = shape
    if results["prob"] is None:
        results["prob"] = np.empty((k, height, width), dtype=np.float32)
    elif tuple(results["prob"].shape) != (k, height, width):
        raise ValueError(f"out has shape {tuple(results['prob'].shape)}, expected {(k, height, width)}")
    writers["prob"] = RowWriter(results["prob"], _chunk_rows(results["prob"], 1))
    if want_unc:
        if results["unc"] is None:
            results["unc"] = np.empty((height, width), dtype=np.float32)
        writers["unc"] = RowWriter(results["unc"], _chunk_rows(results["unc"], 0))
