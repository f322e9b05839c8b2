"""Network input preparation (METHOD 2.1, 2.3, 5.1): the fused per-plane path equals its definition; the
normalisation modes keep blank fields dark and treat a dimmer exposure like the original."""

from __future__ import annotations

import numpy as np
import pytest

from stainseg.groundtruth.illumination import correct_illumination
from stainseg.preprocess import Preprocessing, channel_statistics, correct_plane, normalize, normalize_plane, prepare


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
    settings = Preprocessing(normalization="image")
    ours = prepare(raw, settings)
    corrected, _ = correct_illumination(raw.astype(np.float32), grid=settings.spline_grid, iterations=settings.spline_iterations)
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


def test_prepare_without_illumination_is_normalize():
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 4000, (2, 300, 200)).astype(np.uint16)
    np.testing.assert_array_equal(prepare(stack, Preprocessing(illumination="none", normalization="image")), normalize(stack))


def _bbbc039(bbbc039, n):
    import tifffile

    return [tifffile.imread(p).astype(np.float32)[None] for p in sorted((bbbc039 / "images").iterdir())[:n]]


@pytest.mark.data
def test_hybrid_keeps_a_real_background_field_dark_and_normal_fields_unchanged(bbbc039):
    from PIL import Image

    images = _bbbc039(bbbc039, 12)
    train, held = images[:10], images[10:]
    settings = Preprocessing(normalization="hybrid")
    settings.statistics = channel_statistics([np.stack([correct_plane(p, settings) for p in im]) for im in train])
    image_mode = Preprocessing(normalization="image")
    for im in held:  # fields like the training ones: prepared exactly as per-image normalisation does
        np.testing.assert_array_equal(prepare(im, settings), prepare(im, image_mode))
    # a real blank field: the background of a held-out image, tiled from where its manual mask has no nucleus
    path = sorted((bbbc039 / "images").iterdir())[11]
    mask = np.asarray(Image.open(bbbc039 / "masks" / (path.stem + ".png")))[..., 0] > 0
    from scipy import ndimage as ndi

    free = ~ndi.binary_dilation(mask, iterations=15)
    background = held[1][0][free]
    blank = np.random.default_rng(0).choice(background, size=(1, 256, 256))
    stretched, kept = prepare(blank, image_mode), prepare(blank, settings)
    assert float(np.percentile(stretched, 99)) > 0.3  # per-image stretching blows the noise up to full range
    assert float(np.percentile(np.abs(kept), 99)) < 0.05  # hybrid: it stays dark (nuclei sit near 0.8; debris aside)
    # a 10x dimmer exposure of a field is prepared as the original
    np.testing.assert_allclose(prepare(held[0] / 10.0, settings), prepare(held[0], settings), atol=1e-4)


def test_training_mode_uses_training_contrast():
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 50.0, (1, 128, 128)) + 100
    settings = Preprocessing(illumination="none", normalization="training", statistics=channel_statistics([x]))
    np.testing.assert_allclose(prepare(x, settings), prepare(x, Preprocessing(illumination="none", normalization="image")), atol=1e-5)
    low_contrast = 100 + 0.1 * (x - 100)
    assert float(prepare(low_contrast, settings).max()) < 0.5 * float(prepare(x, settings).max())


def test_settings_round_trip():
    settings = Preprocessing(normalization="training", statistics=channel_statistics([np.arange(1, 65, dtype=float).reshape(1, 8, 8)]))
    assert Preprocessing.from_dict(settings.to_dict()) == settings
