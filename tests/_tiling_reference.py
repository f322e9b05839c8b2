"""Frozen copy of predict_tiled as it was before it was split into plan_tiles / RowAssembler (reference for tests/test_tiling_parts.py). Do not edit.

Original docstring follows.

Tiled inference with Gaussian blending of two shifted passes (METHOD.md 5.2), model-agnostic.

The image is cut into non-overlapping ``tile_size`` tiles (pass 1) and again with the tiling
shifted by ``tile_size // 2`` up and left (pass 2). Each pass alone is a mosaic that covers every
pixel exactly once; the two mosaics are blended per pixel with the weights of a Gaussian image
that is high in tile centres and low (never zero) at tile edges:

    prob = (w1 * p1 + w2 * p2) / (w1 + w2)

so a pixel on a tile seam of one pass takes its value mostly from the centre of a tile of the
other pass. The per-pixel disagreement of the two passes, ``|p1[0] - p2[0]|`` (background
channel; for softmax outputs this equals the disagreement of the foreground probability
``1 - p[0]``), is returned as an uncertainty map: the same pixel seen in two tile contexts.

Limit of the paper's diagonal shift: where a horizontal seam of one pass crosses a vertical
seam of the other (e.g. row 240, column 120), both passes see the pixel near a tile edge and
the two weights are equal, so small residual seam effects remain only at those points.

The image is processed as a stream of tile rows, so only a few tile rows of input and output
are in memory at any time: a zarr (or any array with numpy slicing) input is read band by
band, and a zarr ``out`` is written in blocks aligned to its chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]


def gaussian_weight(tile_size: int, sigma_scale: float = 0.25) -> np.ndarray:
    """1-D Gaussian blending weight of one tile side, peak 1 at the centre.

    Parameters
    ----------
    tile_size : int
        Tile side in pixels.
    sigma_scale : float
        Standard deviation as a fraction of ``tile_size``. With 0.25 the edge weight is
        exp(-2) = 0.14 of the centre (corner 0.018): low, but never 0.

    Returns
    -------
    ndarray of float64, shape (tile_size,)
        The 2-D weight image is the outer product of this vector with itself.
    """
    u = np.arange(tile_size, dtype=np.float64) - (tile_size - 1) / 2.0
    sigma = max(sigma_scale * tile_size, 1e-3)
    return np.exp(-0.5 * (u / sigma) ** 2)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside ``[0, size)`` back inside by mirror reflection (numpy's ``"reflect"``).

    Works for any distance outside, also when it exceeds ``size`` (repeated reflection).
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


def _tiles_of_row(
    image: Any, two_d: bool, shape: tuple[int, int], origin_y: int, origin_x0: int, n_cols: int, tile_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(column index, tile (C, t, t))`` for one tile row starting at (origin_y, origin_x0)."""
    height, width = shape
    band = _read_rows(image, _band_rows(origin_y, tile_size, height), two_d)
    band = _reflect_slice(band, origin_x0, n_cols * tile_size)
    for j in range(n_cols):
        yield j, band[:, :, j * tile_size : (j + 1) * tile_size]


class _RowWriter:
    """Collect finished output rows and write them to ``out`` in blocks aligned to its chunks."""

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


def predict_tiled(
    image: Any,
    predictor: Predictor,
    tile_size: int = 240,
    two_pass: bool = True,
    batch_size: int = 8,
    out: Any = None,
    uncertainty: bool = True,
    uncertainty_out: Any = None,
    sigma_scale: float = 0.25,
    progress: Optional[Callable[[int, int], None]] = None,
    offset: Optional[int] = None,
) -> tuple[Any, Any]:
    """Run ``predictor`` over fixed-size tiles of ``image`` and blend them into one map.

    Parameters
    ----------
    image : array, shape (C, Y, X) or (Y, X)
        Pre-processed input (numpy, zarr or anything with numpy slicing). Only the rows of
        the tiles in flight are read.
    predictor : callable
        ``f(batch (N, C, t, t) float32) -> (N, K, t, t)`` float32 probabilities (any ``K``).
        It always receives exactly ``batch_size`` tiles of ``tile_size`` (the last batch is
        padded with zeros), so a compiled model sees one shape.
    tile_size : int
        Tile side ``t`` (paper: 240). Images smaller than a tile, and borders, are filled by
        mirror reflection.
    two_pass : bool
        Add the pass shifted by ``t // 2`` up and left and blend with Gaussian weights
        (paper's scheme). With False, one pass of non-overlapping tiles.
    batch_size : int
        Tiles per predictor call.
    out : array, shape (K, Y, X), optional
        Where to write the probabilities (e.g. a zarr array: written in blocks of its chunk
        rows). A float32 numpy array is allocated when not given.
    uncertainty : bool
        Return the two-pass disagreement map (only with ``two_pass``).
    uncertainty_out : array, shape (Y, X), optional
        Where to write the uncertainty (e.g. a zarr array); allocated when not given.
    sigma_scale : float
        Gaussian weight standard deviation as a fraction of the tile size.
    progress : callable, optional
        Called as ``progress(tiles_done, tiles_total)`` after every batch.
    offset : int, optional
        Shift of the second pass up and left, ``0 < offset < tile_size`` (default and paper:
        ``tile_size // 2``).

    Returns
    -------
    prob : array, shape (K, Y, X)
        Blended probabilities (``out`` when given).
    uncertainty : array, shape (Y, X) or None
        ``|p1[0] - p2[0]|`` of the two passes, or None with one pass / ``uncertainty=False``.
        (0 in a last sliver of at most ``t / 4`` rows or columns that only pass 1 covers.)

    Examples
    --------
    >>> img = np.random.default_rng(0).random((1, 300, 500), dtype=np.float32)
    >>> prob, unc = predict_tiled(img, lambda x: x + 1, tile_size=64)
    >>> bool(np.allclose(prob, img + 1, atol=1e-5)), float(unc.max()) < 1e-5
    (True, True)
    """
    if tile_size < 2:
        raise ValueError("tile_size must be at least 2")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    two_d = len(image.shape) == 2
    if not two_d and len(image.shape) != 3:
        raise ValueError(f"image must be (C, Y, X) or (Y, X), got shape {tuple(image.shape)}")
    height, width = (int(s) for s in image.shape[-2:])
    if height < 1 or width < 1:
        raise ValueError(f"image has no pixels: shape {tuple(image.shape)}")
    t = int(tile_size)
    h = (t // 2 if offset is None else int(offset)) if two_pass else 0
    if two_pass and not 0 < h < t:
        raise ValueError(f"offset must be between 1 and tile_size - 1, got {offset}")
    want_unc = bool(two_pass and uncertainty)

    ny1, nx1 = -(-height // t), -(-width // t)
    # pass-2 tile row k covers rows [k t - h, k t + t - h); keep those that intersect the image
    ny2, nx2 = (-(-(height + h) // t), -(-(width + h) // t)) if two_pass else (0, 0)
    if two_pass:
        # A last shifted tile row (column) that would cover at most t/4 image rows is skipped:
        # those rows lie in the centre of pass-1 tiles (no seam to hide there), and it saves
        # ~10 % of the work on 2048^2 (the shifted pass would need a 10th row for 8 rows).
        # There the map is pass 1 alone and the uncertainty is 0.
        if ny2 > 1 and height - ((ny2 - 1) * t - h) <= t // 4:
            ny2 -= 1
        if nx2 > 1 and width - ((nx2 - 1) * t - h) <= t // 4:
            nx2 -= 1
    cover_y, cover_x = ny2 * t - h, nx2 * t - h  # image rows / columns covered by pass 2

    # Stream order: pass-2 row r, pass-1 row r, then pass-2 row r+1 completes output row r.
    # Output "row" r = image rows [r t, min(r t + t, Y)).
    def tile_stream() -> Iterator[tuple[int, int, int, np.ndarray]]:
        for r in range(max(ny1, ny2)):
            if r < ny2:
                for j, tile in _tiles_of_row(image, two_d, (height, width), r * t - h, -h, nx2, t):
                    yield 2, r, j, tile
            if r < ny1:
                for j, tile in _tiles_of_row(image, two_d, (height, width), r * t, 0, nx1, t):
                    yield 1, r, j, tile

    # what each output row waits for: nx1 pass-1 tiles, and the pass-2 tiles of rows r and r+1
    def needed(r: int) -> int:
        y0, y1 = r * t, min(r * t + t, height)
        n = nx1
        if two_pass:
            for k in (r, r + 1):
                if k < ny2 and k * t - h < y1 and k * t + t - h > y0:
                    n += nx2
        return n

    total = ny1 * nx1 + ny2 * nx2
    wy = gaussian_weight(t, sigma_scale)
    # w1 / (w1 + w2) for one output row (every output row starts at a multiple of t)
    ys, xs = np.arange(t), np.arange(width)
    w1 = np.outer(wy[ys % t], wy[xs % t])
    w2 = np.outer(wy[(ys + h) % t], wy[(xs + h) % t])
    pass1_share = (w1 / (w1 + w2)).astype(np.float32)
    del w1, w2
    state: dict[str, Any] = {"K": None, "done": 0}
    rows: dict[int, dict[str, Any]] = {}
    writers: dict[str, _RowWriter] = {}
    results: dict[str, Any] = {"prob": out, "unc": uncertainty_out}

    def start_outputs(k: int) -> None:
        state["K"] = k
        if results["prob"] is None:
            results["prob"] = np.empty((k, height, width), dtype=np.float32)
        elif tuple(results["prob"].shape) != (k, height, width):
            raise ValueError(f"out has shape {tuple(results['prob'].shape)}, expected {(k, height, width)}")
        writers["prob"] = _RowWriter(results["prob"], _chunk_rows(results["prob"], 1))
        if want_unc:
            if results["unc"] is None:
                results["unc"] = np.empty((height, width), dtype=np.float32)
            writers["unc"] = _RowWriter(results["unc"], _chunk_rows(results["unc"], 0))

    def row_state(r: int) -> dict[str, Any]:
        if r not in rows:
            n = min(r * t + t, height) - r * t
            k = state["K"]
            rows[r] = {
                "p1": np.empty((k, n, width), dtype=np.float32),
                "p2": np.empty((k, n, width), dtype=np.float32) if two_pass else None,
                "count": 0,
            }
        return rows[r]

    def finish_row(r: int) -> None:
        st = rows.pop(r)
        y0 = r * t
        n = st["p1"].shape[1]
        final = y0 + n >= height
        if not two_pass:
            writers["prob"].add(y0, st["p1"], final)
            return
        a = pass1_share[:n]
        p1, p2 = st["p1"], st["p2"]
        if y0 + n > cover_y:  # rows without a shifted tile: pass 1 alone
            p2[:, max(cover_y - y0, 0) :] = p1[:, max(cover_y - y0, 0) :]
        if width > cover_x:
            p2[:, :, cover_x:] = p1[:, :, cover_x:]
        blended = p1 - p2
        blended *= a
        blended += p2
        writers["prob"].add(y0, blended, final)
        if want_unc:
            writers["unc"].add(y0, np.abs(p1[0] - p2[0]), final)

    def place(kind: int, r: int, j: int, tile_out: np.ndarray) -> None:
        if kind == 1:
            x0 = j * t
            x1 = min(x0 + t, width)
            st = row_state(r)
            st["p1"][:, :, x0:x1] = tile_out[:, : st["p1"].shape[1], : x1 - x0]
            st["count"] += 1
            targets = [r]
        else:
            gx0 = j * t - h  # image column of the tile's first column
            x0, x1 = max(gx0, 0), min(gx0 + t, width)
            gy0 = r * t - h
            targets = []
            for orow in (r - 1, r):  # the tile's upper part belongs to output row r-1, lower to r
                if orow < 0 or orow >= ny1:
                    continue
                oy0, oy1 = orow * t, min(orow * t + t, height)
                y0, y1 = max(gy0, oy0), min(gy0 + t, oy1)
                if y1 <= y0:
                    continue
                st = row_state(orow)
                st["p2"][:, y0 - oy0 : y1 - oy0, x0:x1] = tile_out[:, y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
                st["count"] += 1
                targets.append(orow)
        for orow in targets:
            if rows[orow]["count"] == needed(orow):
                finish_row(orow)

    def run_batch(batch: list[tuple[int, int, int, np.ndarray]]) -> None:
        x = np.zeros((batch_size, batch[0][3].shape[0], t, t), dtype=np.float32)
        for i, item in enumerate(batch):
            x[i] = item[3]
        y = np.asarray(predictor(x), dtype=np.float32)
        if y.ndim != 4 or y.shape[0] != batch_size or y.shape[2:] != (t, t):
            raise ValueError(f"predictor returned shape {y.shape}, expected ({batch_size}, K, {t}, {t})")
        if state["K"] is None:
            start_outputs(y.shape[1])
        for i, (kind, r, j, _) in enumerate(batch):
            place(kind, r, j, y[i])
        state["done"] += len(batch)
        if progress is not None:
            progress(state["done"], total)

    batch: list[tuple[int, int, int, np.ndarray]] = []
    for item in tile_stream():
        batch.append(item)
        if len(batch) == batch_size:
            run_batch(batch)
            batch = []
    if batch:
        run_batch(batch)
    if rows:  # pragma: no cover - guarded by the tile bookkeeping
        raise RuntimeError(f"tiling bookkeeping error: rows {sorted(rows)} incomplete")
    return results["prob"], results["unc"] if want_unc else None
