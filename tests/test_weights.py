"""Class-balance weight images (METHOD.md 2.4)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from stainseg.train.weights import auto_foreground_factor, balanced_weights, class_weight_image, foreground_factor


def _cells(fraction_disks: int = 6, shape=(120, 150)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    rng = np.random.default_rng(3)
    for _ in range(fraction_disks):
        rr, cc = disk((rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)), 8, shape=shape)
        mask[rr, cc] = True
    return mask


def test_background_and_foreground_sum_equally():
    fg = _cells()
    w = balanced_weights(fg)
    assert w.dtype == np.float32 and w.shape == fg.shape
    assert np.isclose(w[fg].sum(), w[~fg].sum(), rtol=1e-5)
    assert np.isclose(w.sum(), fg.size, rtol=1e-5)  # mean weight 1
    assert w[fg].min() > w[~fg].max()  # the minority class is up-weighted


def test_factor_multiplies_foreground_only():
    fg = _cells()
    base = balanced_weights(fg)
    w = class_weight_image(fg, 3.0)
    assert np.allclose(w[fg], 3 * base[fg]) and np.array_equal(w[~fg], base[~fg])
    assert np.isclose(w[fg].sum(), 3 * w[~fg].sum(), rtol=1e-5)


def test_single_class_images_get_uniform_weight():
    assert np.array_equal(balanced_weights(np.zeros((5, 5), bool)), np.ones((5, 5), np.float32))
    assert np.array_equal(balanced_weights(np.ones((5, 5), bool)), np.ones((5, 5), np.float32))


def test_auto_factor_follows_density():
    assert auto_foreground_factor(0.1) == pytest.approx(3.0)  # the paper's value for sparse cells
    assert auto_foreground_factor(0.5) == 1.0 and auto_foreground_factor(0.9) == 1.0
    assert auto_foreground_factor(0.0) == 5.0
    assert auto_foreground_factor(0.05) > auto_foreground_factor(0.2) > auto_foreground_factor(0.4)
    assert foreground_factor(3.0, 0.5) == 3.0 and foreground_factor("auto", 0.1) == pytest.approx(3.0)
