"""Scores of many in-memory image pairs at once, pooled overall and per group (METHOD section 6).

:func:`evaluate_arrays` is the array function behind both ``stainseg.evaluate`` on a set of images and
the ``evaluate`` file stage (:mod:`stainseg.stages.evaluate`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from stainseg.errors import StainsegError
from stainseg.evaluate.matching import (
    IOU_THRESHOLDS,
    best_matches,
    match_iou,
    overlap_table,
)
from stainseg.evaluate.summary import pooled_scores

ALL_GROUP = "all"
UNGROUPED = "ungrouped"

GroupBy = None | str | Mapping[str, str] | Callable[[str], str]


def image_groups(names: Iterable[str], group_by: GroupBy = None) -> dict[str, str]:
    """The group (e.g. well or site) of each image, for per-group box plots and summaries.

    Parameters
    ----------
    names : iterable of str
        Image names (file stems).
    group_by : None, str, mapping or callable
        None: one group ``'all'``. A mapping: name to group (missing names go to ``'ungrouped'``).
        A callable: name -> group. A string: a regular expression searched in each name; the group
        is its named groups joined by ``'_'`` (or the whole match), ``'ungrouped'`` when it fails,
        e.g. ``r'_(?P<well>[A-P]\\d{2})_s'`` groups BBBC images by well.

    Examples
    --------
    >>> names = ["plate_A01_s1", "plate_A01_s2", "plate_B02_s1"]
    >>> image_groups(names, "_(?P<well>[A-P][0-9]{2})_s")
    {'plate_A01_s1': 'A01', 'plate_A01_s2': 'A01', 'plate_B02_s1': 'B02'}
    >>> image_groups(names)["plate_B02_s1"]
    'all'
    """
    names = list(names)
    if group_by is None:
        return {name: ALL_GROUP for name in names}
    if isinstance(group_by, str):
        try:
            pattern = re.compile(group_by)
        except re.error as exc:
            raise StainsegError(f"group pattern {group_by!r} is not a valid regular expression ({exc})") from None

        def lookup(name: str) -> str:
            match = pattern.search(name)
            if match is None:
                return UNGROUPED
            named = [v for v in match.groupdict().values() if v is not None]
            return "_".join(named) if named else match.group(0)

        return {name: lookup(name) for name in names}
    if isinstance(group_by, Mapping):
        return {name: str(group_by.get(name, UNGROUPED)) for name in names}
    if callable(group_by):
        return {name: str(group_by(name)) for name in names}
    raise TypeError(f"group_by must be None, a pattern, a mapping or a callable, not {type(group_by).__name__}")


def _check_pair(name: str, truth: np.ndarray, pred: np.ndarray, truth_path: Any = None, pred_path: Any = None) -> None:
    if np.shape(truth) != np.shape(pred):
        where = f"{truth_path} is {np.shape(truth)} but {pred_path} is {np.shape(pred)}" if truth_path else \
            f"image {name!r}: ground truth is {np.shape(truth)} but prediction is {np.shape(pred)}"
        raise StainsegError(f"shape mismatch: {where}; the prediction must be made from the same image as its "
                            "ground truth")


def _percent_range(percents: Iterable[float]) -> dict[str, float | None]:
    """Min / median / max of the finite per-image percentages (None each when there is none)."""
    values = np.array(list(percents), dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return {"min": None, "median": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


def _evaluate_items(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    group_by: GroupBy,
    fscore_threshold: float,
    iou_thresholds: Iterable[float],
    iou_threshold: float,
) -> dict[str, Any]:
    thresholds = np.asarray(list(iou_thresholds), dtype=np.float64)
    images: dict[str, dict[str, Any]] = {}
    fscores: dict[str, np.ndarray] = {}
    sweeps: dict[str, dict[str, Any]] = {}
    per_object: list[dict[str, Any]] = []
    for name, truth, pred in items:
        _check_pair(name, truth, pred)
        table = overlap_table(truth, pred)
        matches = best_matches(table)
        sweep = match_iou(table, thresholds=thresholds)
        fscores[name], sweeps[name] = matches.fscore, sweep
        images[name] = pooled_scores([matches.fscore], [sweep], fscore_threshold, iou_threshold)
        del images[name]["n_images"]
        per_object.extend({"image": name, "truth_label": int(t), "fscore": float(f), "best_pred_label": int(p),
                           "iou": float(i)}
                          for t, f, p, i in zip(matches.truth_label, matches.fscore, matches.pred_label, matches.iou))
    if not images:
        raise StainsegError("no image pairs to evaluate; give at least one ground-truth / prediction pair")
    groups_of = image_groups(images, group_by)
    for name, record in images.items():
        record["group"] = groups_of[name]
    for row in per_object:
        row["group"] = groups_of[row["image"]]
    groups: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(groups_of.values()):
        members = [n for n in images if groups_of[n] == group]
        summary = pooled_scores([fscores[n] for n in members], [sweeps[n] for n in members],
                                fscore_threshold, iou_threshold)
        summary["images"] = members
        summary["per_image_percent_f_above"] = _percent_range(images[n]["percent_f_above"] for n in members)
        del summary["iou_sweep"]
        groups[group] = summary
    overall = pooled_scores(fscores.values(), sweeps.values(), fscore_threshold, iou_threshold)
    overall["per_image_percent_f_above"] = _percent_range(r["percent_f_above"] for r in images.values())
    return {"overall": overall, "groups": groups, "images": images, "per_object": per_object,
            "fscores": fscores}


def evaluate_arrays(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    group_by: GroupBy = None,
    fscore_threshold: float = 0.6,
    iou_thresholds: Iterable[float] = IOU_THRESHOLDS,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Score in-memory (truth, prediction) label images (METHOD section 6).

    Parameters
    ----------
    pairs : mapping of str to (ndarray, ndarray)
        Image name to (ground-truth labels, predicted labels) of the same shape.
    group_by : None, str, mapping or callable
        Image grouping for the per-group summaries and box plots (see :func:`image_groups`).
    fscore_threshold, iou_thresholds, iou_threshold
        As in :func:`stainseg.evaluate.summary.evaluate_pair`.

    Returns
    -------
    dict
        ``overall``: pooled over all objects of all images (F-score statistics of every object,
        IoU counts summed, plus min / median / max of the per-image percentage); ``groups``: the same
        per group, with its image names; ``images``: the scores of each image and its group;
        ``per_object``: rows (image, group, truth_label, fscore, best_pred_label, iou);
        ``fscores``: image name to its per-object F-score array.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((20, 20), int); truth[2:8, 2:8] = 1; truth[10:18, 10:18] = 2
    >>> result = evaluate_arrays({"A01_s1": (truth, truth), "A01_s2": (truth, np.zeros_like(truth))})
    >>> result["overall"]["n_truth"], result["overall"]["percent_f_above"]
    (4, 50.0)
    """
    return _evaluate_items(((name, np.asarray(t), np.asarray(p)) for name, (t, p) in pairs.items()),
                           group_by, fscore_threshold, iou_thresholds, iou_threshold)
