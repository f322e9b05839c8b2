"""Network input preparation (METHOD 2.1, 2.3, 5.1): the fused per-plane path equals its definition."""

from __future__ import annotations

import numpy as np
import pytest

from stainseg.config import ExperimentConfig
from stainseg.groundtruth.illumination import correct_illumination
from stainseg.preprocess import normalize, normalize_plane, prepare_input


def _reference_normalize(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """The definition, step by step in float64: robust percentiles of a subsample, clip, minus median."""
    out = []
    for channel in np.asarray(image, np.float64):
        sy, sx = max(1, channel.shape[0] // 512), max(1, channel.shape[1] // 512)
        lo, hi = np.percentile(channel[::sy, ::sx], [low, high])
        if hi <= lo:
            out.append(np.zeros_like(channel))
            continue
        scaled = np.clip((channel - lo) / (hi - lo), 0, 1)
        out.append(scaled - np.median(scaled[::sy, ::sx]))
    return np.stack(out)


def test_prepare_input_on_a_real_image_equals_correction_then_normalisation(bbbc039):
    import tifffile

    path = sorted((bbbc039 / "images").iterdir())[0]
    raw = tifffile.imread(path)[None]
    cfg = ExperimentConfig(objects="nuclei")
    ours = prepare_input(raw, cfg)
    corrected, _ = correct_illumination(raw.astype(np.float32), grid=cfg.groundtruth.spline_grid, iterations=cfg.groundtruth.spline_iterations)
    assert ours.dtype == np.float32 and ours.shape == raw.shape
    np.testing.assert_allclose(ours, _reference_normalize(corrected), atol=2e-6)
    assert abs(float(np.median(ours))) < 1e-3
    assert raw.dtype == np.uint16  # the caller's array is not changed


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_normalize_equals_its_definition(dtype):
    rng = np.random.default_rng(0)
    image = (rng.gamma(2.0, 40.0, (3, 700, 530))).astype(dtype)
    np.testing.assert_allclose(normalize(image), _reference_normalize(image), atol=2e-6)


def test_constant_channel_becomes_zero_and_in_place_works():
    image = np.stack([np.full((64, 64), 7.0, np.float32), np.arange(64 * 64, dtype=np.float32).reshape(64, 64)])
    out = normalize(image)
    assert not out[0].any() and out[1].max() <= 1
    plane = image[1].copy()
    assert normalize_plane(plane, plane) is plane
    np.testing.assert_allclose(plane, out[1])


def test_prepare_input_without_illumination_is_normalize():
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 4000, (2, 300, 200)).astype(np.uint16)
    cfg = ExperimentConfig(objects="cells")
    cfg.groundtruth.illumination = "none"
    np.testing.assert_array_equal(prepare_input(stack, cfg), normalize(stack))
