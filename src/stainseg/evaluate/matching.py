"""Compare a predicted instance label image with a ground-truth one (METHOD.md section 6).

Two families of scores, both computed from one sparse contingency table of (truth, prediction)
label pairs (:func:`~stainseg.evaluate.overlap.overlap_table`, in :mod:`stainseg.evaluate.overlap`):

* the paper's per-object F-score (6.1, 6.2), in this module: every ground-truth object is matched
  to the predicted object it overlaps most; F = 2|G∩P| / (|G| + |P|); unmatched ground-truth
  objects score 0;
* the scores of Cellpose / StarDist papers (6.5), in :mod:`stainseg.evaluate.iou_matching`:
  one-to-one matching at an IoU threshold, giving true / false positives, false negatives,
  precision, recall, F1 and their "average precision" AP = TP / (TP + FP + FN).

Every name of both is importable from here (``from stainseg.evaluate.matching import match_iou``).

Conventions
-----------
* Label 0 is background; labels need not be consecutive.
* F-score statistics over zero ground-truth objects (percentage, median) are NaN: there is nothing
  to score. Pool objects over images (see :func:`stainseg.evaluate.summary.pooled_scores`) to avoid this.
* IoU matching and ratios of zero counts: see :mod:`stainseg.evaluate.iou_matching`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stainseg.evaluate.iou_matching import IOU_THRESHOLDS, match_iou, scores_from_counts
from stainseg.evaluate.overlap import OverlapTable, as_table, overlap_table

__all__ = [
    "FSCORE_THRESHOLDS",
    "IOU_THRESHOLDS",
    "ObjectMatches",
    "OverlapTable",
    "best_matches",
    "fscore_curve",
    "match_iou",
    "object_fscores",
    "overlap_table",
    "percent_above",
    "scores_from_counts",
]

FSCORE_THRESHOLDS = np.linspace(0.0, 1.0, 101)
"""0, 0.01, ..., 1: the F-score axis of the paper's curves (METHOD 6.2)."""


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
    table = as_table(truth, pred)
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
