"""predict_tiled split into a tile plan and a row assembler: outputs bit for bit those of the former
single function (frozen in tests/_tiling_reference.py) on a real image, and the parts on their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from _tiling_reference import predict_tiled as predict_tiled_before
from stainseg.segment.tiling import RowAssembler, plan_tiles, predict_tiled


def _field(bbbc039: Path) -> np.ndarray:
    from stainseg.io.images import read_image
    from stainseg.preprocess import normalize

    path = sorted((bbbc039 / "images").glob("*.tif"))[0]
    return normalize(np.asarray(read_image(path), np.float32)[None]).astype(np.float32)


def _predictor(x: np.ndarray) -> np.ndarray:
    """Three softmax classes from each pixel and its 9 x 9 neighbourhood: the value depends on the tile context."""
    b = ndi.uniform_filter(x, size=(1, 1, 9, 9), mode="reflect")
    z = np.concatenate([x, b, -x * b], axis=1)
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("options", [dict(tile_size=240), dict(tile_size=240, two_pass=False), dict(tile_size=64, offset=20, batch_size=3),
                                     dict(tile_size=512), dict(tile_size=96, batch_size=5, sigma_scale=0.1)])
def test_split_is_bit_identical_to_the_former_function_on_a_real_field(bbbc039, options):
    image = _field(bbbc039)  # 520 x 696 BBBC039 Hoechst field
    before_p, before_u = predict_tiled_before(image, _predictor, **options)
    after_p, after_u = predict_tiled(image, _predictor, **options)
    np.testing.assert_array_equal(after_p, before_p)
    if before_u is None:
        assert after_u is None
    else:
        np.testing.assert_array_equal(after_u, before_u)


def test_plan_counts_and_every_pixel_is_covered_by_each_pass():
    plan = plan_tiles((520, 696), 240)
    assert (plan.ny1, plan.nx1, plan.ny2, plan.nx2) == (3, 3, 3, 4)
    assert plan.total == sum(1 for _ in plan.order()) == 21
    cover = np.zeros((2, 520, 696), int)
    for kind, r, _ in plan.order():
        oy, ox, n = plan.row_origin(kind, r)
        assert n == (plan.nx1 if kind == 1 else plan.nx2)
    for kind, r, j in plan.order():
        oy, ox, _ = plan.row_origin(kind, r)
        y0, x0 = oy, ox + j * 240
        cover[kind - 1, max(y0, 0):y0 + 240, max(x0, 0):x0 + 240] += 1
    assert (cover[0] == 1).all()  # pass 1: every pixel exactly once
    assert (cover[1][: plan.cover_y, : plan.cover_x] == 1).all() and plan.cover_y >= 520 - 240 // 4


def test_assembler_hands_over_each_row_once_in_order():
    plan = plan_tiles((300, 200), 64)
    rows = RowAssembler(plan, n_classes=2)
    done = []
    for kind, r, j in plan.order():
        done += rows.place(kind, r, j, np.full((2, 64, 64), 0.5, np.float32))
    assert [y0 for y0, _, _ in done] == list(range(0, 300, 64)) and not rows.rows
    assert sum(p.shape[1] for _, p, _ in done) == 300
    assert all(np.allclose(p, 0.5) and float(u.max()) == 0.0 for _, p, u in done)
