"""The contingency table of two instance label images: every (truth, prediction) pair that overlaps.

Built with :func:`numpy.bincount` (no loops over objects or pixels); both scores of
:mod:`stainseg.evaluate.matching` start from it. Label 0 is background; labels need not be consecutive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OverlapTable", "overlap_table", "as_table"]

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
    >>> table = overlap_table(np.array([[1, 1, 1, 0, 2, 2]]), np.array([[3, 3, 0, 0, 2, 4]]))
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
        >>> table = overlap_table(np.array([[1, 1, 1, 0, 2, 2]]), np.array([[3, 3, 0, 0, 2, 4]]))
        >>> table.n_truth, table.n_pred
        (2, 3)
        """
        return int(self.truth_labels.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects (example: :attr:`n_truth`)."""
        return int(self.pred_labels.size)

    def pair_iou(self) -> np.ndarray:
        """Intersection over union of every overlapping pair.

        Examples
        --------
        >>> table = overlap_table(np.array([[1, 1, 1, 0, 2, 2]]), np.array([[3, 3, 0, 0, 2, 4]]))
        >>> table.pair_iou().round(3).tolist(), table.pair_dice().round(3).tolist()
        ([0.667, 0.5, 0.5], [0.8, 0.667, 0.667])
        """
        union = self.truth_areas[self.pair_truth] + self.pred_areas[self.pair_pred] - self.pair_overlap
        return self.pair_overlap / union

    def pair_dice(self) -> np.ndarray:
        """Dice coefficient (the paper's F-score) of every overlapping pair (example: :meth:`pair_iou`)."""
        total = self.truth_areas[self.pair_truth] + self.pred_areas[self.pair_pred]
        return 2.0 * self.pair_overlap / total

    def dense(self) -> np.ndarray:
        """The (n_truth, n_pred) overlap counts as a dense array (for small images).

        Examples
        --------
        >>> table = overlap_table(np.array([[1, 1, 1, 0, 2, 2]]), np.array([[3, 3, 0, 0, 2, 4]]))
        >>> table.dense().tolist()    # rows: truth 1, 2; columns: pred 2, 3, 4
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
    >>> table = overlap_table(np.array([[1, 1, 1, 0, 2, 2]]), np.array([[3, 3, 0, 0, 2, 4]]))
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


def as_table(truth_or_table: np.ndarray | OverlapTable, pred: np.ndarray | None) -> OverlapTable:
    """The table of two label images, or ``truth_or_table`` itself when it is one (``pred`` None).

    Examples
    --------
    >>> import numpy as np
    >>> table = overlap_table(np.array([[1, 1, 0]]), np.array([[2, 0, 0]]))
    >>> as_table(table, None) is table, as_table(np.array([[1, 1, 0]]), np.array([[2, 0, 0]])).n_pred
    (True, 1)
    """
    if isinstance(truth_or_table, OverlapTable):
        return truth_or_table
    if pred is None:
        raise TypeError("give both label images, or one OverlapTable")
    return overlap_table(truth_or_table, pred)
