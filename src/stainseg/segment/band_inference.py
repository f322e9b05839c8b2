"""The network over a huge image, one row of overlap tiles at a time (the block-wise path's inference).

:func:`predict_overlap_rows` runs the very tiles and linear blending of
:func:`stainseg.segment.tiling.predict_overlap` but streams them: only one tile row of input and
of accumulated probabilities is in memory, and finished rows go to a zarr array.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

__all__ = ["predict_overlap_rows"]




def predict_overlap_rows(image: Any, predictor: Callable[[np.ndarray], np.ndarray], out: Any, tile_size: int = 1152,
                         overlap: int = 96, batch_size: int = 1, progress: Optional[Callable[[int, int], None]] = None) -> None:
    """:func:`stainseg.segment.tiling.predict_overlap` streamed one tile row at a time into ``out``.

    The same tiles (:func:`~stainseg.segment.tiling.overlap_origins`) and linear ramps, accumulated
    in the same order, so ``out`` holds the whole-image result; only one tile row of input (rows
    from ``image.rows`` or ``image[:, y0:y1]``) and of sums is in memory.

    Parameters
    ----------
    image : PreparedRows or array (C, Y, X)
        The network input.
    predictor : callable
        ``(N, C, ty, tx) float32 -> (N, K, ty, tx)``.
    out : array (K, Y, X)
        Written in finished row ranges (e.g. a zarr array).
    tile_size, overlap, batch_size
        As in ``predict_overlap``.
    progress : callable, optional
        ``progress(tiles_done, tiles_total)``.

    Examples
    --------
    >>> from stainseg.segment.tiling import predict_overlap
    >>> img = np.random.default_rng(0).random((1, 300, 500), dtype=np.float32)
    >>> out = np.zeros((1, 300, 500), np.float32)
    >>> predict_overlap_rows(img, lambda x: x * 2, out, tile_size=128, overlap=16)
    >>> bool(np.array_equal(out, predict_overlap(img, lambda x: x * 2, tile_size=128, overlap=16)))
    True
    """
    from stainseg.segment.tiling import overlap_origins, ramp_weight

    _, height, width = (int(s) for s in image.shape)
    if not 0 < overlap < tile_size // 2:
        raise ValueError(f"overlap must be between 1 and tile_size / 2 - 1, got {overlap}")
    ty, ys = overlap_origins(height, tile_size, overlap)
    tx, xs = overlap_origins(width, tile_size, overlap)
    ov_y, ov_x = min(overlap, max(ty // 2 - 1, 1)), min(overlap, max(tx // 2 - 1, 1))
    single = len(ys) == 1 and len(xs) == 1
    read = image.rows if hasattr(image, "rows") else (lambda a, b: np.asarray(image[:, a:b], dtype=np.float32))
    acc: Optional[np.ndarray] = None  # weighted sums of rows [base, base + acc rows)
    total = np.zeros((0, width), np.float32)
    base, done, n_tiles = 0, 0, len(ys) * len(xs)
    for i, y0 in enumerate(ys):
        band = np.asarray(read(y0, y0 + ty), dtype=np.float32)
        end = y0 + ty
        if acc is not None and end - base > acc.shape[1]:
            grow = end - base - acc.shape[1]
            acc = np.concatenate([acc, np.zeros((acc.shape[0], grow, width), np.float32)], axis=1)
            total = np.concatenate([total, np.zeros((grow, width), np.float32)])
        elif acc is None:
            total = np.zeros((end - base, width), np.float32)
        wy = ramp_weight(ty, ov_y, i == 0, i == len(ys) - 1)
        for start in range(0, len(xs), batch_size):
            cols = list(range(start, min(start + batch_size, len(xs))))
            x = np.stack([band[:, :, xs[j]:xs[j] + tx] for j in cols])
            y = np.asarray(predictor(x), dtype=np.float32)
            if acc is None:
                acc = np.zeros((y.shape[1], end - base, width), np.float32)
            for k, j in enumerate(cols):
                if single:
                    acc[...] = y[k]
                    total[...] = 1.0
                    continue
                w = np.outer(wy, ramp_weight(tx, ov_x, j == 0, j == len(xs) - 1))
                window = (slice(y0 - base, y0 - base + ty), slice(xs[j], xs[j] + tx))
                acc[(slice(None),) + window] += y[k] * w
                total[window] += w
            done += len(cols)
            if progress is not None:
                progress(done, n_tiles)
        assert acc is not None
        final = ys[i + 1] if i + 1 < len(ys) else height  # rows above the next tile row are complete
        n = final - base
        if not single:
            acc[:, :n] /= total[:n]
        out[:, base:final] = acc[:, :n]
        acc, total, base = acc[:, n:], total[n:], final


