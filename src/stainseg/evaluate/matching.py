"""Compare a predicted instance label image with a ground-truth one (METHOD.md section 6).

Two families of scores, both computed from one sparse contingency table of (truth, prediction)
label pairs built with :func:`numpy.bincount` (no loops over objects or pixels):

* the paper's per-object F-score (6.1, 6.2): every ground-truth object is matched to the predicted
  object it overlaps most; F = 2|G∩P| / (|G| + |P|); unmatched ground-truth objects score 0;
* the scores of Cellpose / StarDist papers (6.5): one-to-one matching at an IoU threshold, giving
  true / false positives, false negatives, precision, recall, F1 and their "average precision"
  AP = TP / (TP + FP + FN).

Conventions
-----------
* Label 0 is background; labels need not be consecutive.
* A pair counts as a match at IoU threshold ``t`` when ``IoU >= t`` and the objects overlap, as in
  the StarDist (``matching``) and Cellpose (``metrics.average_precision``) code. Among candidate
  pairs the number of true positives is a maximum-cardinality one-to-one matching, computed with
  :func:`scipy.sparse.csgraph.maximum_bipartite_matching`. This is the TP count that those papers'
  optimal assignment (``linear_sum_assignment`` on ``-(IoU >= t) - IoU / 2n``) yields, because that
  cost first maximises the number of matched pairs. For ``t > 0.5`` every object has at most one
  candidate, so the matching is unique.
* A ratio whose denominator is zero has nothing that could be wrong and is 1.0: both images empty
  give precision = recall = F1 = AP = 1; an empty prediction has precision 1 but recall, F1, AP 0;
  an empty truth has recall 1 but precision, F1, AP 0.
* F-score statistics over zero ground-truth objects (percentage, median) are NaN: there is nothing
  to score. Pool objects over images (see :func:`stainseg.evaluate.summary.pooled_scores`) to avoid this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
FSCORE_THRESHOLDS = np.linspace(0.0, 1.0, 101)
_DENSE_LIMIT = 1 << 24  # largest dense (n_truth + 1) x (n_pred + 1) table built with bincount


@dataclass(frozen=True)
class OverlapTable:
    """Sparse contingency table of two label images.

    Attributes
    ----------
    truth_labels, pred_labels : ndarray
        Sorted non-zero labels present in each image; object ``i`` below means ``truth_labels[i]``.
    truth_areas, pred_areas : ndarray of int64
        Pixel count of each object.
    pair_truth, pair_pred : ndarray of intp
        Object indices of every overlapping (truth, prediction) pair, sorted by truth then prediction.
    pair_overlap : ndarray of int64
        Pixels shared by each pair (> 0).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
    >>> table = overlap_table(truth, pred)
    >>> table.truth_labels.tolist(), table.pred_labels.tolist(), table.pair_overlap.tolist()
    ([1, 2], [2, 3, 4], [2, 1, 1])
    """

    truth_labels: np.ndarray
    pred_labels: np.ndarray
    truth_areas: np.ndarray
    pred_areas: np.ndarray
    pair_truth: np.ndarray
    pair_pred: np.ndarray
    pair_overlap: np.ndarray

    @property
    def n_truth(self) -> int:
        """Number of ground-truth objects.

        Examples
        --------
        >>> import numpy as np
        >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
        >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
        >>> overlap_table(truth, pred).n_truth
        2
        """
        return int(self.truth_labels.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects.

        Examples
        --------
        >>> import numpy as np
        >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
        >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
        >>> overlap_table(truth, pred).n_pred
        3
        """
        return int(self.pred_labels.size)

    def pair_iou(self) -> np.ndarray:
        """Intersection over union of every overlapping pair.

        Examples
        --------
        >>> import numpy as np
        >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
        >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
        >>> overlap_table(truth, pred).pair_iou().round(3).tolist()
        [0.667, 0.5, 0.5]
        """
        union = self.truth_areas[self.pair_truth] + self.pred_areas[self.pair_pred] - self.pair_overlap
        return self.pair_overlap / union

    def pair_dice(self) -> np.ndarray:
        """Dice coefficient (the paper's F-score) of every overlapping pair.

        Examples
        --------
        >>> import numpy as np
        >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
        >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
        >>> overlap_table(truth, pred).pair_dice().round(3).tolist()
        [0.8, 0.667, 0.667]
        """
        total = self.truth_areas[self.pair_truth] + self.pred_areas[self.pair_pred]
        return 2.0 * self.pair_overlap / total

    def dense(self) -> np.ndarray:
        """The (n_truth, n_pred) overlap counts as a dense array (for small images).

        Examples
        --------
        >>> import numpy as np
        >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
        >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
        >>> overlap_table(truth, pred).dense().tolist()    # rows: truth 1, 2; columns: pred 2, 3, 4
        [[0, 2, 0], [1, 0, 1]]
        """
        out = np.zeros((self.n_truth, self.n_pred), dtype=np.int64)
        out[self.pair_truth, self.pair_pred] = self.pair_overlap
        return out


def _index_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (sorted non-zero labels, per-pixel index: 0 for background, i + 1 for labels[i])."""
    flat = np.asarray(labels).ravel()
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if not np.issubdtype(flat.dtype, np.integer):
        if np.issubdtype(flat.dtype, np.floating) and np.all(flat == np.round(flat)):
            flat = flat.astype(np.int64)
        else:
            raise ValueError(f"label images must hold integers, got {flat.dtype}")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.intp)
    low, high = int(flat.min()), int(flat.max())
    if low < 0:
        raise ValueError("label images must not hold negative labels")
    if high < 4 * flat.size + 1024:  # lookup table: linear time, no sort
        present = np.bincount(flat.astype(np.intp, copy=False), minlength=high + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lut = np.zeros(high + 1, dtype=np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids, lut[flat]
    uniq, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.astype(np.intp, copy=False)
    if uniq[0] == 0:
        return uniq[1:].astype(np.int64), inverse
    return uniq.astype(np.int64), inverse + 1


def overlap_table(truth: np.ndarray, pred: np.ndarray) -> OverlapTable:
    """Count the pixels shared by every ground-truth and predicted object.

    Parameters
    ----------
    truth, pred : ndarray of int
        Instance label images of the same shape; 0 is background, labels need not be consecutive.

    Returns
    -------
    OverlapTable
        Object labels, areas and the overlapping pairs with their pixel counts.

    Raises
    ------
    ValueError
        Shapes differ, or labels are negative or not integers.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
    >>> table = overlap_table(truth, pred)
    >>> table.truth_areas.tolist(), table.pred_areas.tolist()
    ([3, 2], [1, 2, 1])
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction shape {pred.shape}")
    t_ids, t_idx = _index_labels(truth)
    p_ids, p_idx = _index_labels(pred)
    n_t, n_p = t_ids.size + 1, p_ids.size + 1
    t_area = np.bincount(t_idx, minlength=n_t)[1:].astype(np.int64)
    p_area = np.bincount(p_idx, minlength=n_p)[1:].astype(np.int64)
    both = (t_idx > 0) & (p_idx > 0)
    codes = t_idx[both].astype(np.int64) * n_p + p_idx[both]
    if n_t * n_p <= max(_DENSE_LIMIT, 2 * codes.size):
        counts = np.bincount(codes, minlength=n_t * n_p)
        nonzero = np.flatnonzero(counts)
        overlap = counts[nonzero].astype(np.int64)
    else:  # many objects: a sort of the overlapping pixels instead of a huge dense table
        nonzero, overlap = np.unique(codes, return_counts=True)
        overlap = overlap.astype(np.int64)
    pair_t = (nonzero // n_p - 1).astype(np.intp)
    pair_p = (nonzero % n_p - 1).astype(np.intp)
    return OverlapTable(t_ids, p_ids, t_area, p_area, pair_t, pair_p, overlap)


def _as_table(truth_or_table: np.ndarray | OverlapTable, pred: np.ndarray | None) -> OverlapTable:
    if isinstance(truth_or_table, OverlapTable):
        return truth_or_table
    if pred is None:
        raise TypeError("give both label images, or one OverlapTable")
    return overlap_table(truth_or_table, pred)


@dataclass(frozen=True)
class ObjectMatches:
    """Each ground-truth object with its best-overlapping prediction (the paper's matching).

    Attributes
    ----------
    truth_label : ndarray
        Ground-truth labels, ascending.
    pred_label : ndarray
        Label of the predicted object of largest overlap; 0 when none overlaps.
    overlap : ndarray
        Shared pixels with that prediction.
    fscore, iou : ndarray
        Dice (F-score) and IoU of the pair; 0 when unmatched.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
    >>> m = best_matches(truth, pred)
    >>> m.truth_label.tolist(), m.pred_label.tolist(), m.overlap.tolist()
    ([1, 2], [3, 2], [2, 1])
    """

    truth_label: np.ndarray
    pred_label: np.ndarray
    overlap: np.ndarray
    fscore: np.ndarray
    iou: np.ndarray


def best_matches(truth: np.ndarray | OverlapTable, pred: np.ndarray | None = None) -> ObjectMatches:
    """Match every ground-truth object to the predicted object it overlaps most (METHOD 6.1).

    Ties in overlap go to the prediction with the higher F-score (the smaller one), then to the
    lower label.

    Parameters
    ----------
    truth, pred : ndarray of int
        Label images of the same shape; or one :class:`OverlapTable` as ``truth``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
    >>> m = best_matches(truth, pred)    # truth 2 overlaps 2 and 4 equally: the lower label wins
    >>> m.pred_label.tolist(), m.fscore.round(3).tolist(), m.iou.round(3).tolist()
    ([3, 2], [0.8, 0.667], [0.667, 0.5])
    """
    table = _as_table(truth, pred)
    n = table.n_truth
    pred_label = np.zeros(n, dtype=np.int64)
    overlap = np.zeros(n, dtype=np.int64)
    fscore = np.zeros(n, dtype=np.float64)
    iou = np.zeros(n, dtype=np.float64)
    if table.pair_truth.size:
        pred_area = table.pred_areas[table.pair_pred]
        # primary key last: truth index, then largest overlap, then smallest prediction, then label
        order = np.lexsort((table.pair_pred, pred_area, -table.pair_overlap, table.pair_truth))
        sorted_truth = table.pair_truth[order]
        first = order[np.r_[True, sorted_truth[1:] != sorted_truth[:-1]]]
        rows = table.pair_truth[first]
        pred_label[rows] = table.pred_labels[table.pair_pred[first]]
        overlap[rows] = table.pair_overlap[first]
        fscore[rows] = table.pair_dice()[first]
        iou[rows] = table.pair_iou()[first]
    return ObjectMatches(table.truth_labels.copy(), pred_label, overlap, fscore, iou)


def object_fscores(truth: np.ndarray | OverlapTable, pred: np.ndarray | None = None) -> np.ndarray:
    """The paper's per-object F-score: one value per ground-truth object, ordered by label.

    F = 2|G∩P| / (|G| + |P|) with P the predicted object of largest overlap; 0 when none overlaps.

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2]])
    >>> pred = np.array([[5, 0, 0, 7]])
    >>> object_fscores(truth, pred).tolist()
    [0.6666666666666666, 1.0]
    """
    return best_matches(truth, pred).fscore


def fscore_curve(fscores: np.ndarray, thresholds: np.ndarray = FSCORE_THRESHOLDS) -> np.ndarray:
    """Percentage of ground-truth objects whose F-score is >= each threshold (METHOD 6.2).

    Returns NaN everywhere when there are no objects.

    Examples
    --------
    >>> import numpy as np
    >>> fscore_curve(np.array([0.2, 0.7, 0.9]), np.array([0.0, 0.5, 0.8])).round(1).tolist()
    [100.0, 66.7, 33.3]
    """
    fscores = np.asarray(fscores, dtype=np.float64).ravel()
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if fscores.size == 0:
        return np.full(thresholds.shape, np.nan)
    ordered = np.sort(fscores)
    below = np.searchsorted(ordered, thresholds, side="left")
    return 100.0 * (fscores.size - below) / fscores.size


def percent_above(fscores: np.ndarray, threshold: float = 0.6) -> float:
    """Percentage of objects with F-score >= ``threshold`` (the paper's headline at 0.6).

    Examples
    --------
    >>> import numpy as np
    >>> percent_above(np.array([0.2, 0.7, 0.9, 0.6]))
    75.0
    """
    return float(fscore_curve(fscores, np.array([threshold]))[0])


def scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and AP = TP / (TP + FP + FN) from counts; 0 / 0 gives 1.0.

    Examples
    --------
    >>> import numpy as np
    >>> s = scores_from_counts(np.array([8, 0]), np.array([2, 0]), np.array([2, 0]))
    >>> s["precision"].tolist(), s["f1"].tolist(), s["ap"].round(3).tolist()
    ([0.8, 1.0], [0.8, 1.0], [0.667, 1.0])
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.ones(np.broadcast(num, den).shape), where=den > 0)

    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "ap": ratio(tp, tp + fp + fn),
    }


def _max_matching(truth_idx: np.ndarray, pred_idx: np.ndarray, n_truth: int, n_pred: int) -> int:
    """Size of a maximum one-to-one matching among the given candidate pairs."""
    if truth_idx.size == 0:
        return 0
    if np.unique(truth_idx).size == truth_idx.size and np.unique(pred_idx).size == pred_idx.size:
        return int(truth_idx.size)  # every object has at most one candidate: unique matching
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    graph = csr_matrix((np.ones(truth_idx.size, dtype=np.int8), (truth_idx, pred_idx)), shape=(n_truth, n_pred))
    matched = maximum_bipartite_matching(graph, perm_type="column")
    return int(np.count_nonzero(matched >= 0))


def match_iou(
    truth: np.ndarray | OverlapTable,
    pred: np.ndarray | None = None,
    thresholds: Iterable[float] = IOU_THRESHOLDS,
) -> dict[str, np.ndarray | int]:
    """One-to-one matching at IoU thresholds, scored as in the Cellpose and StarDist papers.

    Parameters
    ----------
    truth, pred : ndarray of int
        Label images of the same shape; or one :class:`OverlapTable` as ``truth``.
    thresholds : iterable of float
        IoU thresholds; a pair matches when IoU >= threshold and the objects overlap.

    Returns
    -------
    dict
        ``thresholds``, ``tp``, ``fp``, ``fn`` (int arrays), ``precision``, ``recall``, ``f1``,
        ``ap`` (float arrays, one value per threshold), and ``n_truth``, ``n_pred``.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[3, 3, 0, 0, 2, 4]])
    >>> r = match_iou(truth, pred, thresholds=[0.5, 0.75])
    >>> r["tp"].tolist(), r["fp"].tolist(), r["fn"].tolist()
    ([2, 0], [1, 3], [0, 2])
    """
    table = _as_table(truth, pred)
    thresholds = np.atleast_1d(np.asarray(list(thresholds), dtype=np.float64))
    iou = table.pair_iou()
    tp = np.zeros(thresholds.size, dtype=np.int64)
    for k, threshold in enumerate(thresholds):
        keep = iou >= threshold
        tp[k] = _max_matching(table.pair_truth[keep], table.pair_pred[keep], table.n_truth, table.n_pred)
    fp = table.n_pred - tp
    fn = table.n_truth - tp
    return {"thresholds": thresholds, "tp": tp, "fp": fp, "fn": fn, **scores_from_counts(tp, fp, fn),
            "n_truth": table.n_truth, "n_pred": table.n_pred}
