"""The paper's two-pass tile layout (METHOD.md 5.2) and the Gaussian blending of its passes into output rows.

:func:`plan_tiles` places the tiles of both passes (pass 2 shifted by ``tile_size // 2`` up and
left), :func:`pass1_share` and :func:`blend_rows` blend the two passes of one output row with
Gaussian weights, and :class:`RowAssembler` collects predicted tiles into rows and hands each row
over as soon as it is complete. :func:`stainseg.segment.tiling.predict_tiled` wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np


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
