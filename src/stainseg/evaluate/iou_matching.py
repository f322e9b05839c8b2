"""One-to-one matching at IoU thresholds, scored as in the Cellpose and StarDist papers (METHOD.md 6.5).

True / false positives and false negatives at each threshold, with precision, recall, F1 and
their "average precision" AP = TP / (TP + FP + FN), from an :class:`~stainseg.evaluate.overlap.OverlapTable`.

Conventions
-----------
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
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from stainseg.evaluate.overlap import OverlapTable, as_table

__all__ = ["IOU_THRESHOLDS", "match_iou", "scores_from_counts"]

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
"""0.5, 0.55, ..., 0.95: the thresholds of the Cellpose and StarDist papers."""


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
    table = as_table(truth, pred)
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
