"""Tiled inference with Gaussian blending of two shifted passes (METHOD.md 5.2), model-agnostic.

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

from dataclasses import dataclass
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


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of :func:`predict_tiled` fall on an image (see :func:`plan_tiles`).

    Pass 1: ``ny1 x nx1`` tiles from (0, 0); pass 2: ``ny2 x nx2`` tiles from (-offset, -offset).
    Output row ``r`` is image rows ``[r t, min(r t + t, height))``; pass 2 covers image rows
    (columns) below ``cover_y`` (``cover_x``), pass 1 alone the rest.
    """

    height: int
    width: int
    tile: int
    offset: int
    two_pass: bool
    ny1: int
    nx1: int
    ny2: int
    nx2: int

    @property
    def cover_y(self) -> int:
        return self.ny2 * self.tile - self.offset

    @property
    def cover_x(self) -> int:
        return self.nx2 * self.tile - self.offset

    @property
    def total(self) -> int:
        """Number of tiles of both passes."""
        return self.ny1 * self.nx1 + self.ny2 * self.nx2

    def order(self) -> Iterator[tuple[int, int, int]]:
        """``(pass, tile row, tile column)`` in stream order: pass-2 row r, pass-1 row r, then pass-2 row r+1 completes output row r."""
        for r in range(max(self.ny1, self.ny2)):
            if r < self.ny2:
                for j in range(self.nx2):
                    yield 2, r, j
            if r < self.ny1:
                for j in range(self.nx1):
                    yield 1, r, j

    def row_origin(self, kind: int, r: int) -> tuple[int, int, int]:
        """Image ``(y, x)`` of the first tile of row ``r`` of pass ``kind``, and the row's number of tiles."""
        if kind == 1:
            return r * self.tile, 0, self.nx1
        return r * self.tile - self.offset, -self.offset, self.nx2

    def needed(self, r: int) -> int:
        """How many tiles output row ``r`` waits for: ``nx1`` of pass 1, and the pass-2 tiles of rows r and r+1 that overlap it."""
        t, h = self.tile, self.offset
        y0, y1 = r * t, min(r * t + t, self.height)
        n = self.nx1
        if self.two_pass:
            for k in (r, r + 1):
                if k < self.ny2 and k * t - h < y1 and k * t + t - h > y0:
                    n += self.nx2
        return n


def plan_tiles(shape: tuple[int, int], tile_size: int, two_pass: bool = True, offset: Optional[int] = None) -> TilePlan:
    """The tile layout of :func:`predict_tiled` for an image of ``shape`` (Y, X).

    Examples
    --------
    >>> plan = plan_tiles((2048, 2048), 240)
    >>> (plan.ny1, plan.nx1, plan.ny2, plan.nx2, plan.total)
    (9, 9, 9, 9, 162)
    >>> plan_tiles((2048, 2048), 240, two_pass=False).total
    81
    """
    height, width = (int(s) for s in shape)
    t = int(tile_size)
    h = (t // 2 if offset is None else int(offset)) if two_pass else 0
    if two_pass and not 0 < h < t:
        raise ValueError(f"offset must be between 1 and tile_size - 1, got {offset}")
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
    return TilePlan(height, width, t, h, bool(two_pass), ny1, nx1, ny2, nx2)


def pass1_share(plan: TilePlan, sigma_scale: float = 0.25) -> np.ndarray:
    """``w1 / (w1 + w2)`` for one output row (t, width), float32: pass 1's blending weight (every output row starts at a multiple of t)."""
    t, h = plan.tile, plan.offset
    wy = gaussian_weight(t, sigma_scale)
    ys, xs = np.arange(t), np.arange(plan.width)
    w1 = np.outer(wy[ys % t], wy[xs % t])
    w2 = np.outer(wy[(ys + h) % t], wy[(xs + h) % t])
    return (w1 / (w1 + w2)).astype(np.float32)


def blend_rows(plan: TilePlan, y0: int, p1: np.ndarray, p2: Optional[np.ndarray], share: Optional[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The finished output rows starting at image row ``y0``: ``(probabilities (K, n, X), |p1[0] - p2[0]| or None)``.

    Where pass 2 does not reach (beyond ``cover_y`` / ``cover_x``) pass 1 alone is used. ``p2`` is changed.

    Examples
    --------
    >>> plan = plan_tiles((64, 64), 32)
    >>> p1, p2 = np.full((2, 32, 64), 0.2, np.float32), np.full((2, 32, 64), 0.6, np.float32)
    >>> prob, unc = blend_rows(plan, 0, p1, p2, pass1_share(plan))
    >>> bool(0.2 < prob.min() <= prob.max() < 0.6), round(float(unc.max()), 4)
    (True, 0.4)
    """
    if p2 is None or share is None:
        return p1, None
    n = p1.shape[1]
    if y0 + n > plan.cover_y:  # rows without a shifted tile: pass 1 alone
        p2[:, max(plan.cover_y - y0, 0) :] = p1[:, max(plan.cover_y - y0, 0) :]
    if plan.width > plan.cover_x:
        p2[:, :, plan.cover_x :] = p1[:, :, plan.cover_x :]
    blended = p1 - p2
    blended *= share[:n]
    blended += p2
    return blended, np.abs(p1[0] - p2[0])


class RowAssembler:
    """Collects predicted tiles into output rows and hands each row over, blended, as soon as it is complete.

    ``place(pass, tile row, tile column, tile (K, t, t))`` returns the rows it completed, as
    ``(y0, probabilities (K, n, X), uncertainty (n, X) or None)``.

    Examples
    --------
    >>> plan = plan_tiles((40, 50), 32, two_pass=False)
    >>> rows = RowAssembler(plan, n_classes=1)
    >>> done = [rows.place(k, r, j, np.ones((1, 32, 32), np.float32)) for k, r, j in plan.order()]
    >>> [(y0, p.shape) for d in done for y0, p, _ in d]
    [(0, (1, 32, 50)), (32, (1, 8, 50))]
    """

    def __init__(self, plan: TilePlan, n_classes: int, sigma_scale: float = 0.25) -> None:
        self.plan = plan
        self.k = int(n_classes)
        self.share = pass1_share(plan, sigma_scale) if plan.two_pass else None
        self.rows: dict[int, dict[str, Any]] = {}

    def _row(self, r: int) -> dict[str, Any]:
        if r not in self.rows:
            t, height, width = self.plan.tile, self.plan.height, self.plan.width
            n = min(r * t + t, height) - r * t
            self.rows[r] = {
                "p1": np.empty((self.k, n, width), dtype=np.float32),
                "p2": np.empty((self.k, n, width), dtype=np.float32) if self.plan.two_pass else None,
                "count": 0,
            }
        return self.rows[r]

    def place(self, kind: int, r: int, j: int, tile_out: np.ndarray) -> list[tuple[int, np.ndarray, Optional[np.ndarray]]]:
        plan = self.plan
        t, h, width, height = plan.tile, plan.offset, plan.width, plan.height
        if kind == 1:
            x0 = j * t
            x1 = min(x0 + t, width)
            st = self._row(r)
            st["p1"][:, :, x0:x1] = tile_out[:, : st["p1"].shape[1], : x1 - x0]
            st["count"] += 1
            targets = [r]
        else:
            gx0 = j * t - h  # image column of the tile's first column
            x0, x1 = max(gx0, 0), min(gx0 + t, width)
            gy0 = r * t - h
            targets = []
            for orow in (r - 1, r):  # the tile's upper part belongs to output row r-1, lower to r
                if orow < 0 or orow >= plan.ny1:
                    continue
                oy0, oy1 = orow * t, min(orow * t + t, height)
                y0, y1 = max(gy0, oy0), min(gy0 + t, oy1)
                if y1 <= y0:
                    continue
                st = self._row(orow)
                st["p2"][:, y0 - oy0 : y1 - oy0, x0:x1] = tile_out[:, y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
                st["count"] += 1
                targets.append(orow)
        finished = []
        for orow in targets:
            if self.rows[orow]["count"] == plan.needed(orow):
                st = self.rows.pop(orow)
                prob, unc = blend_rows(plan, orow * t, st["p1"], st["p2"], self.share)
                finished.append((orow * t, prob, unc))
        return finished


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
    plan = plan_tiles((height, width), t, two_pass, offset)
    want_unc = bool(two_pass and uncertainty)

    results: dict[str, Any] = {"prob": out, "unc": uncertainty_out}
    writers: dict[str, _RowWriter] = {}
    assembler: Optional[RowAssembler] = None
    done = 0

    def tiles() -> Iterator[tuple[int, int, int, np.ndarray]]:
        for r in range(max(plan.ny1, plan.ny2)):
            for kind in (2, 1):
                if r < (plan.ny2 if kind == 2 else plan.ny1):
                    oy, ox, n_cols = plan.row_origin(kind, r)
                    for j, tile in _tiles_of_row(image, two_d, (height, width), oy, ox, n_cols, t):
                        yield kind, r, j, tile

    def run_batch(batch: list[tuple[int, int, int, np.ndarray]]) -> None:
        nonlocal assembler, done
        x = np.zeros((batch_size, batch[0][3].shape[0], t, t), dtype=np.float32)
        for i, item in enumerate(batch):
            x[i] = item[3]
        y = np.asarray(predictor(x), dtype=np.float32)
        if y.ndim != 4 or y.shape[0] != batch_size or y.shape[2:] != (t, t):
            raise ValueError(f"predictor returned shape {y.shape}, expected ({batch_size}, K, {t}, {t})")
        if assembler is None:
            assembler = RowAssembler(plan, y.shape[1], sigma_scale)
            _start_outputs(results, writers, y.shape[1], (height, width), want_unc)
        for i, (kind, r, j, _) in enumerate(batch):
            for y0, prob, unc in assembler.place(kind, r, j, y[i]):
                final = y0 + prob.shape[1] >= height
                writers["prob"].add(y0, prob, final)
                if want_unc:
                    writers["unc"].add(y0, unc, final)
        done += len(batch)
        if progress is not None:
            progress(done, plan.total)

    batch: list[tuple[int, int, int, np.ndarray]] = []
    for item in tiles():
        batch.append(item)
        if len(batch) == batch_size:
            run_batch(batch)
            batch = []
    if batch:
        run_batch(batch)
    if assembler is not None and assembler.rows:  # pragma: no cover - guarded by the tile bookkeeping
        raise RuntimeError(f"tiling bookkeeping error: rows {sorted(assembler.rows)} incomplete")
    return results["prob"], results["unc"] if want_unc else None


def _start_outputs(results: dict[str, Any], writers: dict[str, "_RowWriter"], k: int, shape: tuple[int, int], want_unc: bool) -> None:
    """Allocate (or check) the outputs once the number of classes is known, and their row writers."""
    height, width = shape
    if results["prob"] is None:
        results["prob"] = np.empty((k, height, width), dtype=np.float32)
    elif tuple(results["prob"].shape) != (k, height, width):
        raise ValueError(f"out has shape {tuple(results['prob'].shape)}, expected {(k, height, width)}")
    writers["prob"] = _RowWriter(results["prob"], _chunk_rows(results["prob"], 1))
    if want_unc:
        if results["unc"] is None:
            results["unc"] = np.empty((height, width), dtype=np.float32)
        writers["unc"] = _RowWriter(results["unc"], _chunk_rows(results["unc"], 0))


def overlap_origins(size: int, tile_size: int, overlap: int, multiple: int = 8) -> tuple[int, list[int]]:
    """Tile side and tile starts along one axis: the fewest tiles of at most ``tile_size`` that overlap by at least ``overlap``.

    The side is then shrunk to what those tiles need (rounded up to ``multiple``), so little is computed twice.

    Examples
    --------
    >>> overlap_origins(2048, 1152, 96)
    (1072, [0, 976])
    >>> overlap_origins(700, 1152, 96)
    (700, [0])
    """
    if size <= tile_size:
        return size, [0]
    n = -(-(size - overlap) // (tile_size - overlap))
    side = min(tile_size, -(-(-(-(size + (n - 1) * overlap) // n)) // multiple) * multiple)
    return side, [int(round(v)) for v in np.linspace(0, size - side, n)]


def ramp_weight(tile_size: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D weight of one tile side: 1 inside, rising linearly over ``overlap`` px at a side shared with a neighbour.

    Never 0, so every pixel has weight; at an image border (``first`` / ``last``) the side stays 1.
    """
    w = np.ones(tile_size, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not first:
        w[:overlap] = ramp
    if not last:
        w[tile_size - overlap:] = ramp[::-1]
    return w


def predict_overlap(image: Any, predictor: Predictor, tile_size: int = 1152, overlap: int = 96, batch_size: int = 1,
                    progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """One pass of large tiles that overlap by a narrow band, blended linearly across it: (K, Y, X) float32.

    The fast scheme on a CPU (``[segment] tiling = "overlap"``): ``tile_size`` is the largest tile
    side; a 2048² image is 2 x 2 tiles of 1072² overlapping by 96 px (:func:`overlap_origins`),
    1.1 times its pixels against 2.5 times for the paper's two shifted passes of 240-px tiles,
    with the working memory of one tile instead of the whole image. An image no larger than a
    tile is one pass over the whole image (no padding).

    Examples
    --------
    >>> img = np.random.default_rng(0).random((1, 300, 500), dtype=np.float32)
    >>> bool(np.allclose(predict_overlap(img, lambda x: x + 1, tile_size=128, overlap=16), img + 1, atol=1e-5))
    True
    """
    two_d = len(image.shape) == 2
    height, width = (int(s) for s in image.shape[-2:])
    if not 0 < overlap < tile_size // 2:
        raise ValueError(f"overlap must be between 1 and tile_size / 2 - 1, got {overlap}")
    ty, ys = overlap_origins(height, tile_size, overlap)
    tx, xs = overlap_origins(width, tile_size, overlap)
    ov_y, ov_x = min(overlap, max(ty // 2 - 1, 1)), min(overlap, max(tx // 2 - 1, 1))
    tiles = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    prob: Optional[np.ndarray] = None
    total = np.zeros((height, width), np.float32)
    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start:start + batch_size]
        x = np.stack([np.asarray(image[..., ys[i]:ys[i] + ty, xs[j]:xs[j] + tx], dtype=np.float32) for i, j in chunk])
        x = x[:, None] if two_d else x
        y = np.asarray(predictor(x), dtype=np.float32)
        if prob is None:
            prob = np.zeros((y.shape[1], height, width), np.float32)
        for k, (i, j) in enumerate(chunk):
            w = np.outer(ramp_weight(ty, ov_y, i == 0, i == len(ys) - 1), ramp_weight(tx, ov_x, j == 0, j == len(xs) - 1))
            if len(ys) == 1 and len(xs) == 1:
                prob[...] = y[k]
                total[...] = 1.0
                continue
            window = (slice(ys[i], ys[i] + ty), slice(xs[j], xs[j] + tx))
            prob[(slice(None),) + window] += y[k] * w
            total[window] += w
        if progress is not None:
            progress(min(start + batch_size, len(tiles)), len(tiles))
    assert prob is not None
    if not (len(ys) == 1 and len(xs) == 1):
        prob /= total
    return prob
