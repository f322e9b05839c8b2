"""tiling = "overlap": one pass of large tiles blended across a narrow overlap (the default scheme)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.segment.tiling import overlap_origins, predict_overlap, ramp_weight


def _local(x: np.ndarray) -> np.ndarray:
    """Two classes from a 9 x 9 neighbourhood: exact inside a tile more than 4 px from its edge."""
    b = ndi.uniform_filter(x, size=(1, 1, 9, 9), mode="reflect")
    p = 1 / (1 + np.exp(-8 * (b - 0.5)))
    return np.concatenate([1 - p, p], axis=1).astype(np.float32)


@pytest.mark.parametrize("size", [520, 696, 1000, 2048, 3001])
def test_tiles_cover_the_axis_with_the_overlap_asked_for(size):
    side, starts = overlap_origins(size, 1152, 96)
    assert side <= 1152 and starts[0] == 0 and starts[-1] + side == size
    assert all(b - a <= side - 96 for a, b in zip(starts, starts[1:]))  # neighbours overlap by >= 96 px


def test_weights_never_vanish_and_stay_one_at_image_borders():
    w = ramp_weight(64, 16, first=True, last=False)
    assert w[0] == 1.0 and 0 < w[-1] < 0.1 and (w > 0).all()


def test_pointwise_predictor_is_reproduced_and_a_local_one_nearly(bbbc039):
    from stainseg.io.images import read_image
    from stainseg.preprocess import normalize

    path = sorted((bbbc039 / "images").glob("*.tif"))[0]
    image = normalize(np.asarray(read_image(path), np.float32)[None]).astype(np.float32)  # 520 x 696 real field
    np.testing.assert_allclose(predict_overlap(image, lambda x: x * 2, tile_size=256, overlap=32), image * 2, atol=1e-5)
    whole = _local(image[None])[0]
    blended = predict_overlap(image, _local, tile_size=256, overlap=32)
    assert blended.shape == whole.shape
    assert float(np.abs(blended - whole).max()) < 0.05  # only within 4 px of a tile edge, down-weighted there
    # with 1152-px tiles the field is one whole-image pass: identical to it
    np.testing.assert_array_equal(predict_overlap(image, _local), whole)


def test_model_default_is_overlap_and_the_papers_tiles_stay_an_option():
    import stainseg

    model = stainseg.Model.new(["DNA"])
    assert model.segment_settings.tiling == "overlap"
    image = np.random.default_rng(0).gamma(2.0, 50.0, (300, 260))
    x = model.prepare(image)
    prob, unc = model.predict_prepared(x, uncertainty=True)
    assert prob.shape == (2, 300, 260) and unc is None
    prob_t, unc_t = model.predict_prepared(x, uncertainty=True, tiling="tiles")
    assert unc_t is not None and unc_t.shape == (300, 260)
    with pytest.raises(stainseg.StainsegError if hasattr(stainseg, "StainsegError") else Exception, match="tiling"):
        model.predict_prepared(x, tiling="whole")
