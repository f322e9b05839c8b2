"""Augmentation and targets (METHOD.md 2.2): image and labels must move together."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label as connected

from stainseg.train.augment import BOUNDARY, INTERIOR, mirror_crop, mirror_extend, random_sample, targets_from_labels


def _labels(shape=(90, 130), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for k in range(1, 9):
        rr, cc = disk((rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)), rng.integers(5, 10), shape=shape)
        lab[rr, cc] = k
    return lab


def test_mirror_crop_equals_padded_crop():
    a = np.arange(2 * 7 * 11, dtype=float).reshape(2, 7, 11)
    ext = mirror_extend(a)
    assert ext.shape == (2, 21, 33)
    assert np.array_equal(ext[:, 7:14, 11:22], a)
    for top, left, size in [(-7, -11, 5), (-3, 4, 10), (0, 0, 7), (5, 12, 9), (-7, -11, 21)]:
        assert np.array_equal(mirror_crop(a, top, left, size), ext[:, top + 7 : top + 7 + size, left + 11 : left + 11 + size])
    assert mirror_crop(a, -20, -30, 64).shape == (2, 64, 64)  # larger than 3 x 3: keeps mirroring


def test_image_and_targets_stay_aligned():
    """The image is derived from the labels; any independent flip or crop would break the relation."""
    lab = _labels()
    targets = targets_from_labels(lab, "3class")
    image = np.stack([lab * 10.0 + 0.5, -lab.astype(float)])  # (C, Y, X), encodes the label value
    weights = np.random.default_rng(1).random(lab.shape).astype(np.float32)
    rng = np.random.default_rng(42)
    flips = set()
    for _ in range(40):
        x, (t, lab_crop, w) = random_sample(image, [targets, lab, weights], 48, rng)
        assert x.shape == (2, 48, 48) and t.shape == lab_crop.shape == w.shape == (48, 48)
        assert np.array_equal(x[0], lab_crop * 10.0 + 0.5) and np.array_equal(x[1], -lab_crop.astype(float))
        assert np.array_equal(t > 0, lab_crop > 0)
        flips.add(x[0].tobytes())
    assert len(flips) > 5  # different crops/flips were drawn


def test_flips_match_weights_exactly():
    lab = _labels()
    weights = np.random.default_rng(1).random(lab.shape).astype(np.float32)
    image = weights[None] * 2.0
    rng = np.random.default_rng(7)
    for _ in range(20):
        x, (w,) = random_sample(image, [weights], 64, rng)
        assert np.array_equal(x[0], w * 2.0)


def test_reproducible_from_generator():
    lab = _labels()
    image = np.random.default_rng(0).random((1,) + lab.shape)
    a = random_sample(image, [lab], 32, np.random.default_rng(5))
    b = random_sample(image, [lab], 32, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1][0], b[1][0])


def test_region_restricts_sampling():
    lab = _labels()
    image = np.zeros((1,) + lab.shape)
    image[:, :, 100:] = 1.0  # the held-out strip
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, _ = random_sample(image, [lab], 40, rng, region=(slice(None), slice(0, 100)))
        assert x.max() == 0.0


def test_targets_two_and_three_class():
    lab = _labels()
    two = targets_from_labels(lab, "2class")
    assert set(np.unique(two)) == {0, 1} and np.array_equal(two == 1, lab > 0)
    three = targets_from_labels(lab, "3class")
    assert set(np.unique(three)) == {0, INTERIOR, BOUNDARY}
    assert np.array_equal(three > 0, lab > 0)  # inner boundary: the objects keep their extent
    # interior pixels of different objects never touch: they separate touching nuclei
    assert connected(three == INTERIOR).max() >= len(np.unique(lab)) - 1 - 1
    with pytest.raises(ValueError):
        targets_from_labels(lab, "4class")


def test_touching_objects_are_separated_by_boundary():
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 3:15] = 1
    lab[5:15, 15:27] = 2
    three = targets_from_labels(lab, "3class")
    assert np.all(three[5:15, 14:16] == BOUNDARY)
    assert connected(three == INTERIOR).max() == 2
