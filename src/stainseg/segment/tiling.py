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

This module holds :func:`predict_tiled`. Its parts live in modules of one job each, and every
public name of them is importable from here too: :mod:`stainseg.segment.tile_plan` (where the
tiles of the two passes fall, and their blending into output rows),
:mod:`stainseg.segment.tile_stream` (reading tile rows, writing output rows) and
:mod:`stainseg.segment.overlap_tiles` (the one pass of large overlapping tiles,
:func:`predict_overlap`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

from stainseg.segment.overlap_tiles import overlap_origins, predict_overlap, ramp_weight
from stainseg.segment.tile_plan import RowAssembler, TilePlan, blend_rows, gaussian_weight, pass1_share, plan_tiles
from stainseg.segment.tile_stream import Predictor, RowWriter, reflect_index, start_outputs, tiles_of_row

__all__ = ["Predictor", "RowAssembler", "TilePlan", "blend_rows", "gaussian_weight", "overlap_origins", "pass1_share",
           "plan_tiles", "predict_overlap", "predict_tiled", "ramp_weight", "reflect_index"]


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
    writers: dict[str, RowWriter] = {}
    assembler: Optional[RowAssembler] = None
    done = 0

    def tiles() -> Iterator[tuple[int, int, int, np.ndarray]]:
        for r in range(max(plan.ny1, plan.ny2)):
            for kind in (2, 1):
                if r < (plan.ny2 if kind == 2 else plan.ny1):
                    oy, ox, n_cols = plan.row_origin(kind, r)
                    for j, tile in tiles_of_row(image, two_d, (height, width), oy, ox, n_cols, t):
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
            start_outputs(results, writers, y.shape[1], (height, width), want_unc)
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
