"""Scores of one image or of many pooled (METHOD 6.1, 6.2, 6.5): the paper's F-score statistics and the
precision / recall / F1 / AP of one-to-one IoU matching, as plain JSON-ready values."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from stainseg.evaluate.matching import (
    IOU_THRESHOLDS,
    match_iou,
    object_fscores,
    overlap_table,
    percent_above,
    scores_from_counts,
)


def _fscore_summary(fscores: np.ndarray, fscore_threshold: float) -> dict[str, float]:
    fscores = np.asarray(fscores, dtype=np.float64)
    empty = fscores.size == 0
    return {
        "fscore_threshold": float(fscore_threshold),
        "percent_f_above": percent_above(fscores, fscore_threshold),
        "median_f": float("nan") if empty else float(np.median(fscores)),
        "mean_f": float("nan") if empty else float(np.mean(fscores)),
    }


def _iou_summary(sweep: Mapping[str, np.ndarray | int], iou_threshold: float) -> dict[str, object]:
    thresholds = np.asarray(sweep["thresholds"])
    hit = np.flatnonzero(np.isclose(thresholds, iou_threshold))
    if hit.size == 0:
        raise ValueError(f"IoU threshold {iou_threshold} is not among the sweep's thresholds")
    k = int(hit[0])
    summary: dict[str, object] = {"iou_threshold": float(iou_threshold)}
    for key in ("tp", "fp", "fn"):
        summary[key] = int(np.asarray(sweep[key])[k])
    for key in ("precision", "recall", "f1", "ap"):
        summary[key] = float(np.asarray(sweep[key])[k])
    summary["mean_ap"] = float(np.mean(sweep["ap"]))
    summary["iou_sweep"] = {key: np.asarray(sweep[key]).tolist()
                            for key in ("thresholds", "tp", "fp", "fn", "precision", "recall", "f1", "ap")}
    return summary


def evaluate_pair(
    truth: np.ndarray,
    pred: np.ndarray,
    fscore_threshold: float = 0.6,
    iou_thresholds: Iterable[float] = IOU_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> dict[str, object]:
    """All scores of one image: the paper's F-score statistics and the IoU-matching scores.

    Parameters
    ----------
    truth, pred : ndarray of int
        Ground-truth and predicted label images of the same shape.
    fscore_threshold : float
        F-score cut of the headline percentage (the paper's 0.6).
    iou_thresholds : iterable of float
        The IoU sweep (default 0.5, 0.55, ..., 0.95); ``mean_ap`` averages AP over it.
    iou_threshold : float
        The sweep threshold whose counts and scores are reported at the top level (0.5).

    Returns
    -------
    dict
        ``n_truth``, ``n_pred``, ``fscore_threshold``, ``percent_f_above``, ``median_f``, ``mean_f``,
        ``iou_threshold``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``ap``,
        ``mean_ap`` and ``iou_sweep`` (lists per threshold). Plain Python values, JSON-ready.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((20, 20), int); truth[2:8, 2:8] = 1; truth[10:18, 10:18] = 2
    >>> pred = np.zeros((20, 20), int); pred[2:8, 2:6] = 1
    >>> s = evaluate_pair(truth, pred)
    >>> s["n_truth"], s["n_pred"], s["percent_f_above"], s["tp"], s["fn"]
    (2, 1, 50.0, 1, 1)
    """
    table = overlap_table(truth, pred)
    fscores = object_fscores(table)
    sweep = match_iou(table, thresholds=iou_thresholds)
    return {"n_truth": table.n_truth, "n_pred": table.n_pred,
            **_fscore_summary(fscores, fscore_threshold), **_iou_summary(sweep, iou_threshold)}


def pooled_scores(
    fscores: Iterable[np.ndarray],
    sweeps: Iterable[Mapping[str, np.ndarray | int]],
    fscore_threshold: float = 0.6,
    iou_threshold: float = 0.5,
) -> dict[str, object]:
    """Scores over many images: F-scores of all objects together, IoU counts summed per threshold.

    Parameters
    ----------
    fscores : iterable of ndarray
        Per-object F-scores of each image (:func:`object_fscores`).
    sweeps : iterable of dict
        :func:`match_iou` results of the same images, all with the same thresholds.

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.evaluate.matching import match_iou, object_fscores
    >>> a = np.zeros((10, 10), int); a[1:5, 1:5] = 1
    >>> b = np.zeros((10, 10), int); b[1:5, 1:3] = 1
    >>> pooled = pooled_scores([object_fscores(a, a), object_fscores(a, b)], [match_iou(a, a), match_iou(a, b)])
    >>> pooled["n_truth"], pooled["percent_f_above"], pooled["tp"], pooled["mean_ap"]   # IoU 0.5: a match at 0.5 only
    (2, 100.0, 2, 0.4)
    """
    all_f = np.concatenate([np.asarray(f, dtype=np.float64).ravel() for f in fscores] or [np.zeros(0)])
    sweeps = list(sweeps)
    if not sweeps:
        raise ValueError("no images to pool")
    thresholds = np.asarray(sweeps[0]["thresholds"])
    for sweep in sweeps[1:]:
        if not np.array_equal(np.asarray(sweep["thresholds"]), thresholds):
            raise ValueError("all sweeps must use the same IoU thresholds")
    tp, fp, fn = (np.sum([np.asarray(s[key]) for s in sweeps], axis=0) for key in ("tp", "fp", "fn"))
    pooled = {"thresholds": thresholds, "tp": tp, "fp": fp, "fn": fn, **scores_from_counts(tp, fp, fn)}
    return {"n_images": len(sweeps),
            "n_truth": int(sum(int(s["n_truth"]) for s in sweeps)),
            "n_pred": int(sum(int(s["n_pred"]) for s in sweeps)),
            **_fscore_summary(all_f, fscore_threshold), **_iou_summary(pooled, iou_threshold)}
