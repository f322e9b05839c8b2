"""Tiled inference (METHOD.md 5.2): exact stitching, borders, small images, shift invariance, zarr."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.segment.tiling import gaussian_weight, predict_tiled, reflect_index


def _image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32)


@pytest.mark.parametrize("shape", [(1, 300, 500), (2, 128, 192), (3, 37, 250), (1, 7, 5), (1, 1, 1), (2, 65, 63), (1, 168, 100)])
@pytest.mark.parametrize("two_pass", [True, False])
def test_pointwise_predictors_are_reproduced_exactly(shape, two_pass):
    img = _image(shape)
    for f, expected in ((lambda x: x.copy(), img), (lambda x: x + 1, img + 1)):
        prob, unc = predict_tiled(img, f, tile_size=64, two_pass=two_pass, batch_size=3)
        assert prob.shape == shape and prob.dtype == np.float32
        np.testing.assert_allclose(prob, expected, atol=1e-5)
        if two_pass:
            assert unc.shape == shape[1:] and float(unc.max()) < 1e-6
        else:
            assert unc is None


def test_two_d_input_and_channel_change():
    img = _image((90, 70))
    prob, _ = predict_tiled(img, lambda x: np.concatenate([x, 1 - x], axis=1), tile_size=32)
    np.testing.assert_allclose(prob[0], img, atol=1e-5)
    np.testing.assert_allclose(prob[1], 1 - img, atol=1e-5)


def test_predictor_sees_fixed_batch_and_tile_shape():
    shapes = []

    def f(x):
        shapes.append(x.shape)
        return x

    predict_tiled(_image((1, 100, 130)), f, tile_size=48, batch_size=5)
    assert set(shapes) == {(5, 1, 48, 48)}
    # pass 1: 3 x 3 tiles; pass 2 (shifted by 24): 3 rows x 3 columns, its 4th column would
    # only cover the last 10 <= 48 / 4 columns and is skipped -> 18 tiles -> 4 batches
    assert len(shapes) == 4


def test_weight_is_gaussian_positive_and_peaks_in_centre():
    w = gaussian_weight(240)
    assert w.min() > 0.1 and w[119] == pytest.approx(w[120]) and w.argmax() in (119, 120)
    assert w[0] == pytest.approx(np.exp(-2), rel=0.02)


def test_reflect_index_matches_numpy_pad():
    for size in (1, 2, 5, 9):
        x = np.arange(size)
        expected = np.pad(x, 23, mode="reflect") if size > 1 else np.zeros(size + 46, int)
        np.testing.assert_array_equal(x[reflect_index(np.arange(-23, size + 23), size)], expected)


def _blur_predictor(x):
    """A fixed convolution computed per tile (zero padding at tile edges = real tile-border effects)."""
    return ndi.uniform_filter(x, size=(1, 1, 9, 9), mode="constant")


def test_two_pass_blending_removes_tile_seams():
    yy, xx = np.mgrid[:256, :256]
    img = (0.5 + 0.5 * np.sin(yy / 9.0) * np.cos(xx / 13.0)).astype(np.float32)[None]
    whole = ndi.uniform_filter(img, size=(1, 9, 9), mode="mirror")  # mirror = numpy "reflect"
    one, _ = predict_tiled(img, _blur_predictor, tile_size=64, two_pass=False)
    two, unc = predict_tiled(img, _blur_predictor, tile_size=64, two_pass=True)
    err_one, err_two = np.abs(one - whole), np.abs(two - whole)
    assert err_two.mean() < 0.5 * err_one.mean()
    assert (err_two > 0.05).mean() < 0.5 * (err_one > 0.05).mean()
    # the only large errors left are where a seam of pass 1 crosses a seam of pass 2
    # (rows at multiples of 64, columns at 32 + multiples of 64, and vice versa)
    yy, xx = np.mgrid[:256, :256]
    crossing = ((np.minimum(yy % 64, 64 - yy % 64) < 5) & (np.minimum((xx + 32) % 64, 64 - (xx + 32) % 64) < 5)) | (
        (np.minimum(xx % 64, 64 - xx % 64) < 5) & (np.minimum((yy + 32) % 64, 64 - (yy + 32) % 64) < 5)
    )
    assert err_two[0][~crossing].max() < 0.5 * err_one.max()
    # disagreement lies on the tile seams of either pass, and is ~0 in between
    assert unc[80:90, 80:90].max() < 1e-4 < unc[60:68, 10:20].max()


def test_result_does_not_depend_on_where_tile_borders_fall():
    yy, xx = np.mgrid[:300, :300]
    img = (0.5 + 0.5 * np.sin(yy / 7.0 + xx / 11.0)).astype(np.float32)[None]
    shift = 21  # not a multiple of the tile size or the half tile
    ref, _ = predict_tiled(img[:, shift:, shift:], _blur_predictor, tile_size=64)
    moved, _ = predict_tiled(img, _blur_predictor, tile_size=64)
    diff = np.abs(ref[:, 40:-40, 40:-40] - moved[:, shift + 40 : -40, shift + 40 : -40])
    one_ref, _ = predict_tiled(img[:, shift:, shift:], _blur_predictor, tile_size=64, two_pass=False)
    one_moved, _ = predict_tiled(img, _blur_predictor, tile_size=64, two_pass=False)
    one_diff = np.abs(one_ref[:, 40:-40, 40:-40] - one_moved[:, shift + 40 : -40, shift + 40 : -40])
    assert diff.mean() < 0.5 * one_diff.mean()
    assert diff.mean() < 0.05  # a 9 x 9 zero-padded box filter is a harsh test: up to 50 % off at tile edges


def test_zarr_in_zarr_out_matches_in_memory(tmp_path):
    zarr = pytest.importorskip("zarr")
    img = _image((2, 333, 210))
    src = zarr.open(str(tmp_path / "in.zarr"), mode="w", shape=img.shape, dtype="f4", chunks=(1, 100, 100))
    src[:] = img
    out = zarr.open(str(tmp_path / "p.zarr"), mode="w", shape=img.shape, dtype="f4", chunks=(2, 128, 128))
    unc_out = zarr.open(str(tmp_path / "u.zarr"), mode="w", shape=img.shape[1:], dtype="f4", chunks=(100, 100))
    prob, unc = predict_tiled(src, _blur_predictor, tile_size=48, out=out, uncertainty_out=unc_out)
    assert prob is out and unc is unc_out
    ref, ref_unc = predict_tiled(img, _blur_predictor, tile_size=48)
    np.testing.assert_allclose(out[:], ref, atol=1e-6)
    np.testing.assert_allclose(unc_out[:], ref_unc, atol=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        predict_tiled(np.zeros((1, 2, 3, 4), np.float32), lambda x: x)
    with pytest.raises(ValueError):
        predict_tiled(np.zeros((1, 10, 10), np.float32), lambda x: x[:1], tile_size=8, batch_size=2)
    with pytest.raises(ValueError):
        predict_tiled(np.zeros((1, 10, 10), np.float32), lambda x: x, out=np.zeros((2, 10, 10), np.float32))


def test_second_pass_offset_is_an_option():
    """Any offset of the second pass still reproduces a pointwise predictor exactly; bad offsets fail."""
    img = _image((2, 301, 257))
    for offset in (1, 36, 63):
        prob, unc = predict_tiled(img, lambda x: 2 * x, tile_size=64, offset=offset)
        np.testing.assert_allclose(prob, 2 * img, atol=1e-5)
        assert float(unc.max()) < 1e-5
    for offset in (0, 64, -3):
        with pytest.raises(ValueError, match="offset"):
            predict_tiled(img, lambda x: x, tile_size=64, offset=offset)
