"""Tests of stainseg.evaluate.matching: a slow reference (loops over objects), hand-made cases with
known answers, and edge cases (empty images, non-consecutive and huge labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from stainseg.evaluate.matching import (
    IOU_THRESHOLDS,
    best_matches,
    fscore_curve,
    match_iou,
    object_fscores,
    overlap_table,
    percent_above,
)
from stainseg.evaluate.summary import evaluate_pair, pooled_scores

SWEEP = np.round(np.arange(0.05, 1.0, 0.05), 2)  # includes low thresholds where matching is ambiguous


# ---------------------------------------------------------------- slow reference (pure Python loops)

def reference_fscores(truth: np.ndarray, pred: np.ndarray) -> list[float]:
    """Per truth object: F-score with the prediction of largest overlap (ties: smaller, then lower label)."""
    out = []
    for t in sorted(set(np.unique(truth).tolist()) - {0}):
        g = truth == t
        best = None
        for p in sorted(set(np.unique(pred).tolist()) - {0}):
            q = pred == p
            inter = int(np.count_nonzero(g & q))
            if inter == 0:
                continue
            key = (inter, -int(q.sum()), -p)
            if best is None or key > best[0]:
                best = (key, 2.0 * inter / (g.sum() + q.sum()))
        out.append(0.0 if best is None else best[1])
    return out


def reference_match(truth: np.ndarray, pred: np.ndarray, thresholds: np.ndarray) -> list[tuple[int, int, int]]:
    """(tp, fp, fn) per threshold with the StarDist / Cellpose optimal assignment."""
    t_ids = sorted(set(np.unique(truth).tolist()) - {0})
    p_ids = sorted(set(np.unique(pred).tolist()) - {0})
    iou = np.zeros((len(t_ids), len(p_ids)))
    for i, t in enumerate(t_ids):
        for j, p in enumerate(p_ids):
            g, q = truth == t, pred == p
            union = np.count_nonzero(g | q)
            iou[i, j] = np.count_nonzero(g & q) / union
    out = []
    n_min = min(len(t_ids), len(p_ids))
    for thr in thresholds:
        tp = 0
        if n_min:
            ok = (iou >= thr) & (iou > 0)
            costs = -ok.astype(float) - iou / (2 * n_min)
            rows, cols = linear_sum_assignment(costs)
            tp = int(np.count_nonzero(ok[rows, cols]))
        out.append((tp, len(p_ids) - tp, len(t_ids) - tp))
    return out


def random_labels(rng: np.random.Generator, shape=(64, 64), n=12, pool=None) -> np.ndarray:
    """Overlapping discs with non-consecutive labels drawn from ``pool`` (later discs occlude earlier)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, dtype=np.int64)
    values = rng.choice(pool if pool is not None else np.arange(1, 5000), size=n, replace=False)
    for value in values:
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(2, 9)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return labels


def perturbed(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A plausible prediction: each object shifted, some dropped, some merged, some added."""
    pred = np.zeros_like(truth)
    for value in np.unique(truth)[1:]:
        if rng.random() < 0.15:
            continue
        dy, dx = rng.integers(-2, 3, size=2)
        moved = np.roll(truth == value, (dy, dx), axis=(0, 1))
        new = value if rng.random() < 0.8 else int(rng.choice(np.unique(truth)[1:]))  # sometimes merge
        pred[moved] = new + 7
    return np.maximum(pred, random_labels(rng, truth.shape, n=3, pool=np.arange(9000, 9100)) * (pred == 0))


# ---------------------------------------------------------------- agreement with the reference

@pytest.mark.parametrize("seed", range(25))
def test_agrees_with_reference_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    truth = random_labels(rng)
    pred = perturbed(rng, truth) if seed % 5 else random_labels(rng, n=int(rng.integers(0, 15)))
    np.testing.assert_allclose(object_fscores(truth, pred), reference_fscores(truth, pred), rtol=0, atol=1e-9)
    result = match_iou(truth, pred, SWEEP)
    expected = reference_match(truth, pred, SWEEP)
    assert list(zip(result["tp"], result["fp"], result["fn"])) == expected


def test_dense_table_matches_loops():
    rng = np.random.default_rng(7)
    truth, pred = random_labels(rng), random_labels(rng)
    table = overlap_table(truth, pred)
    for i, t in enumerate(table.truth_labels):
        assert table.truth_areas[i] == np.count_nonzero(truth == t)
        for j, p in enumerate(table.pred_labels):
            assert table.dense()[i, j] == np.count_nonzero((truth == t) & (pred == p))


# ---------------------------------------------------------------- known answers

def test_identical_labels_score_perfectly():
    truth = random_labels(np.random.default_rng(3))
    fs = object_fscores(truth, truth)
    assert fs.size == np.unique(truth).size - 1 and np.all(fs == 1.0)
    res = evaluate_pair(truth, truth)
    assert res["percent_f_above"] == 100.0 and res["median_f"] == 1.0
    assert res["ap"] == res["f1"] == res["precision"] == res["recall"] == res["mean_ap"] == 1.0
    assert res["fp"] == res["fn"] == 0 and res["tp"] == res["n_truth"]


@pytest.mark.parametrize("shift", [1, 3, 6, 10])
def test_shifted_square_has_exact_dice_and_iou(shift):
    side = 20
    truth = np.zeros((40, 60), np.uint16)
    pred = np.zeros_like(truth)
    truth[10:30, 10:30] = 5
    pred[10:30, 10 + shift:30 + shift] = 2
    m = best_matches(truth, pred)
    assert m.fscore[0] == pytest.approx((side - shift) / side, abs=1e-12)
    iou = (side - shift) / (side + shift)
    assert m.iou[0] == pytest.approx(iou, abs=1e-12)
    assert m.pred_label[0] == 2
    res = match_iou(truth, pred, IOU_THRESHOLDS)
    np.testing.assert_array_equal(res["tp"], (iou >= IOU_THRESHOLDS).astype(int))


def test_shifted_disc_matches_lens_area():
    r, d = 40.0, 12
    yy, xx = np.mgrid[:120, :160]
    truth = ((yy - 60) ** 2 + (xx - 60) ** 2 <= r * r).astype(np.int32)
    pred = ((yy - 60) ** 2 + (xx - 60 - d) ** 2 <= r * r).astype(np.int32) * 3
    lens = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)
    dice = lens / (math.pi * r * r)
    assert object_fscores(truth, pred)[0] == pytest.approx(dice, rel=0.01)
    assert best_matches(truth, pred).iou[0] == pytest.approx(lens / (2 * math.pi * r * r - lens), rel=0.01)


def test_split_truth_object():
    truth = np.zeros((20, 40), np.uint8)
    truth[5:15, 5:25] = 1  # 10 x 20
    pred = np.zeros_like(truth)
    pred[5:15, 5:15] = 8
    pred[5:15, 15:25] = 3  # two halves: equal overlap and size, the lower label wins
    m = best_matches(truth, pred)
    assert m.pred_label.tolist() == [3]
    assert m.fscore[0] == pytest.approx(2 / 3) and m.iou[0] == pytest.approx(0.5)
    res = match_iou(truth, pred, [0.5, 0.55])
    assert res["tp"].tolist() == [1, 0] and res["fp"].tolist() == [1, 2] and res["fn"].tolist() == [0, 1]


def test_merged_truth_objects():
    truth = np.zeros((20, 40), np.uint8)
    truth[5:15, 5:15] = 4
    truth[5:15, 15:25] = 9
    pred = (truth > 0).astype(np.uint8) * 2
    fs = object_fscores(truth, pred)
    np.testing.assert_allclose(fs, [2 / 3, 2 / 3])
    assert percent_above(fs, 0.6) == 100.0 and percent_above(fs, 0.7) == 0.0
    res = match_iou(truth, pred, [0.5, 0.6])
    assert res["tp"].tolist() == [1, 0] and res["fn"].tolist() == [1, 2] and res["fp"].tolist() == [0, 1]
    assert res["ap"][0] == pytest.approx(0.5)


def test_empty_truth():
    truth = np.zeros((10, 10), np.uint16)
    pred = truth.copy()
    pred[1:3, 1:3], pred[5:8, 5:8] = 1, 2
    assert object_fscores(truth, pred).size == 0
    res = evaluate_pair(truth, pred)
    assert math.isnan(res["percent_f_above"]) and math.isnan(res["median_f"])
    assert (res["tp"], res["fp"], res["fn"]) == (0, 2, 0)
    assert (res["precision"], res["recall"], res["f1"], res["ap"], res["mean_ap"]) == (0.0, 1.0, 0.0, 0.0, 0.0)


def test_empty_prediction():
    truth = np.zeros((10, 10), np.uint16)
    truth[1:3, 1:3], truth[5:8, 5:8] = 6, 2
    res = evaluate_pair(truth, np.zeros_like(truth))
    assert res["percent_f_above"] == 0.0 and res["median_f"] == 0.0
    assert (res["tp"], res["fp"], res["fn"]) == (0, 0, 2)
    assert (res["precision"], res["recall"], res["f1"], res["ap"]) == (1.0, 0.0, 0.0, 0.0)
    assert best_matches(truth, np.zeros_like(truth)).pred_label.tolist() == [0, 0]


def test_both_empty_is_perfect_for_matching():
    empty = np.zeros((8, 8), np.uint16)
    res = evaluate_pair(empty, empty)
    assert res["n_truth"] == res["n_pred"] == 0
    assert res["precision"] == res["recall"] == res["f1"] == res["ap"] == res["mean_ap"] == 1.0
    assert math.isnan(res["percent_f_above"])
    assert overlap_table(np.zeros((0, 0), int), np.zeros((0, 0), int)).n_truth == 0


def test_single_object_image_and_no_background():
    truth = np.full((6, 6), 17, np.uint32)  # no background at all
    pred = np.zeros((6, 6), np.uint32)
    pred[:, :3] = 1
    pred[:, 3:] = 1_000_000
    m = best_matches(truth, pred)
    assert m.truth_label.tolist() == [17] and m.pred_label.tolist() == [1]
    assert m.fscore[0] == pytest.approx(2 * 18 / 54)


def test_huge_sparse_labels_use_the_sort_path():
    rng = np.random.default_rng(11)
    truth = random_labels(rng)
    pred = perturbed(rng, truth)
    big_t = truth.astype(np.uint64) * np.uint64(2**40)
    big_p = pred.astype(np.uint64) * np.uint64(2**33)
    np.testing.assert_allclose(object_fscores(big_t, big_p), object_fscores(truth, pred), atol=1e-12)
    assert match_iou(big_t, big_p)["tp"].tolist() == match_iou(truth, pred)["tp"].tolist()
    assert overlap_table(big_t, big_p).truth_labels[0] == int(np.unique(truth)[1]) * 2**40


def test_invalid_inputs():
    with pytest.raises(ValueError, match="shape"):
        overlap_table(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="negative"):
        overlap_table(-np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="integers"):
        overlap_table(np.full((3, 3), 0.5), np.zeros((3, 3), int))
    # boolean masks and integer-valued floats are accepted
    assert object_fscores(np.ones((3, 3), bool), np.ones((3, 3), float)).tolist() == [1.0]


# ---------------------------------------------------------------- curves and pooling

def test_fscore_curve_values():
    fs = np.array([0.2, 0.6, 0.6, 1.0])
    curve = fscore_curve(fs, np.array([0.0, 0.2, 0.21, 0.6, 0.61, 1.0]))
    np.testing.assert_allclose(curve, [100, 100, 75, 75, 25, 25])
    assert percent_above(fs) == 75.0
    full = fscore_curve(fs)
    assert full.shape == (101,) and np.all(np.diff(full) <= 0)
    assert np.all(np.isnan(fscore_curve(np.zeros(0))))


def test_pooled_scores_sum_counts_and_objects():
    rng = np.random.default_rng(5)
    images = []
    for _ in range(3):
        truth = random_labels(rng)
        images.append((truth, perturbed(rng, truth)))
    fs = [object_fscores(t, p) for t, p in images]
    sweeps = [match_iou(t, p) for t, p in images]
    pooled = pooled_scores(fs, sweeps)
    assert pooled["n_images"] == 3
    assert pooled["n_truth"] == sum(s["n_truth"] for s in sweeps)
    tp = sum(int(s["tp"][0]) for s in sweeps)
    fp = sum(int(s["fp"][0]) for s in sweeps)
    fn = sum(int(s["fn"][0]) for s in sweeps)
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (tp, fp, fn)
    assert pooled["ap"] == pytest.approx(tp / (tp + fp + fn))
    assert pooled["percent_f_above"] == pytest.approx(percent_above(np.concatenate(fs)))
    assert pooled["mean_ap"] == pytest.approx(np.mean(pooled["iou_sweep"]["ap"]))
