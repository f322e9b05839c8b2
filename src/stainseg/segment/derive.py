"""Settings of the instance step derived from the training labels, then calibrated (nnU-Net's habit).

What counts as an object (smallest size, seed spacing, saddle depth) should not be a constant
tuned on one data set: it follows from the objects the network was taught. Three steps:

- :func:`object_statistics`: counts, areas and the typical diameter of the training labels;
- :func:`derived_settings`: keyword arguments of
  :func:`stainseg.segment.instances.probability_to_labels` that scale with those objects;
- :func:`calibrate`: threshold, dilation and a ``min_size`` multiplier chosen by the pooled score
  on validation crops against their automatic labels (the score of
  :mod:`stainseg.train.calibrate`: mean of F1@IoU0.5 and the fraction of objects with F >= 0.6),
  optionally with a Gaussian smoothing of the map scaled to the radius (:func:`stainseg.segment.instances.smooth_probability`).

Everything here is plain numpy and JSON-ready (ints, floats, lists, str keys).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from stainseg.segment.instances import dilate_labels, probability_to_labels, smooth_probability

#: Area percentiles recorded by :func:`object_statistics`.
PERCENTILES = (1, 5, 10, 25, 50, 75, 95, 99)
#: Default search grid of :func:`calibrate`.
GRID: dict[str, tuple] = {
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "dilation": (1, 3, 5, 7, 9, 11, 13),
    "min_size_factor": (0.5, 1.0, 2.0),
}
#: Below this many objects in the calibration crops the threshold is not calibrated: the derived
#: ``f / (1 + f)`` is kept (a few dozen objects pick a threshold by chance; issue 16).
MIN_CALIBRATION_OBJECTS = 150
#: Below this best pooled score (mean of the fraction with F >= 0.6 and F1) the calibration keeps the
#: derived settings: when no setting matches even a quarter of the validation objects, the grid's
#: "best" is noise (isl: dilation 11-13 chosen at a score of 0.02, outlining whole cell clusters).
MIN_CALIBRATION_SCORE = 0.25
#: Smoothing sigmas searched by default, as fractions of the typical radius (0 = none).
SMOOTHING_FACTORS = (0.0, 0.15, 0.3)
#: ``min_size`` = this fraction of the 5th percentile of the training object areas.
MIN_SIZE_FRACTION = 0.5
#: Seed spacing = this fraction of the typical radius (the default rule of seeds.py, from the labels).
SEED_SPACING_FRACTION = 0.6
#: Saddle depth = this fraction of the typical radius, but never below the pixel noise of an outline.
DEPTH_FRACTION = 0.04
MIN_DEPTH_FLOOR = 0.5


def _interior_areas(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas of every object and a mask of those that do not touch the image border."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"labels must be 2-D (Y, X), got shape {label.shape}")
    if label.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {label.dtype}")
    counts = np.bincount(label.ravel().astype(np.int64))
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    border = np.zeros(counts.shape[0], bool)
    for edge in (label[0], label[-1], label[:, 0], label[:, -1]):
        border[np.asarray(edge, np.int64)] = True
    return counts[ids].astype(np.int64), ~border[ids]


def object_statistics(labels: Sequence[np.ndarray]) -> dict[str, Any]:
    """Size statistics of the objects in a set of instance label images.

    Areas are taken from objects that do not touch the image border (cut objects would bias
    them low); when every object touches the border, from all objects.

    Parameters
    ----------
    labels : sequence of ndarray of int, shape (Y, X)
        Instance labels, 0 = background (e.g. the automatic training labels).

    Returns
    -------
    dict
        ``images``; ``objects`` (total) and ``count_per_image`` (list); ``objects_per_mpx``
        (objects per million pixels, median over images); ``foreground_fraction``;
        ``area_percentiles`` (str percentile -> px, of :data:`PERCENTILES`); ``area_median``,
        ``area_min``; ``diameter`` (equivalent diameter of the median area, px) and ``radius``;
        ``border_objects`` (how many touch the border).

    Examples
    --------
    >>> lab = np.zeros((64, 64), np.int32)
    >>> lab[10:20, 10:20] = 1; lab[30:40, 30:40] = 2
    >>> s = object_statistics([lab])
    >>> s["objects"], s["area_median"], round(s["diameter"], 2)
    (2, 100.0, 11.28)
    """
    if len(labels) == 0:
        raise ValueError("object_statistics needs at least one label image")
    areas, inner, counts, density, fg = [], [], [], [], []
    for lab in labels:
        a, keep = _interior_areas(lab)
        areas.append(a)
        inner.append(keep)
        counts.append(int(a.size))
        density.append(1e6 * a.size / max(np.asarray(lab).size, 1))
        fg.append(float(np.count_nonzero(lab)) / max(np.asarray(lab).size, 1))
    all_areas, all_inner = np.concatenate(areas), np.concatenate(inner)
    chosen = all_areas[all_inner] if all_inner.any() else all_areas
    stats: dict[str, Any] = {
        "images": len(labels),
        "objects": int(all_areas.size),
        "count_per_image": counts,
        "objects_per_mpx": float(np.median(density)),
        "foreground_fraction": float(np.mean(fg)),
        "border_objects": int(np.count_nonzero(~all_inner)),
    }
    if chosen.size == 0:
        stats.update(area_percentiles={str(p): 0.0 for p in PERCENTILES}, area_median=0.0, area_min=0.0,
                     diameter=0.0, radius=0.0)
        return stats
    pct = np.percentile(chosen, PERCENTILES)
    median = float(np.median(chosen))
    diameter = 2.0 * float(np.sqrt(median / np.pi))
    stats.update(area_percentiles={str(p): float(v) for p, v in zip(PERCENTILES, pct)}, area_median=median,
                 area_min=float(chosen.min()), diameter=diameter, radius=diameter / 2.0)
    return stats


def derived_settings(stats: Mapping[str, Any], foreground_factor: Optional[float] = None) -> dict[str, Any]:
    """Keyword arguments of ``probability_to_labels`` that scale with the training objects.

    Rules (r = typical radius, equivalent radius of the median training object):

    - ``min_size = MIN_SIZE_FRACTION x`` the 5th area percentile (at least 4 px). The network
      was never taught an object smaller than the smallest few percent of its labels; half of
      that leaves room for objects the network draws a little smaller than their label (separation
      lines, under-estimated extent, before dilation), while a speck a few percent of a nucleus
      is removed. It replaces the default "10 % of the median predicted object", which specks
      themselves drag down (on phase contrast, half the predicted objects were specks).
    - ``min_distance = SEED_SPACING_FRACTION x r`` (at least 2 px): the spacing rule the seeds
      use by default, but with r from the labels, not from the predicted mask (whose fragments
      and specks make it small, and so the seeds dense).
    - ``min_depth = max(MIN_DEPTH_FLOOR, DEPTH_FRACTION x r)``: a neck between two nuclei is
      a dip of the distance map that grows with their size, whereas the 0.5 px default is
      about pixel noise; 0.04 r is 0.5 px for r = 12.5 px (BBBC039 nuclei, where 0.5 was
      measured), so that data set keeps its setting.
    - ``threshold = f / (1 + f)`` for a network trained with foreground weight ``f`` (0.5
      without one). Weighting foreground pixels by ``f`` in the loss moves the network's
      optimum from the posterior ``q`` to ``f q / (f q + 1 - q)``; the pixels with ``q = 0.5``
      then read ``f / (1 + f)`` (0.77 for f = 3.4: the flooded, speckled foreground of a 0.5
      threshold). On deepcell HeLa s5 with a 400-iteration model (f = 3.39), F1@0.5 against
      the automatic labels rose from 0.41 at 0.6 to 0.53 at 0.8 (0.56 at 0.9).
    - ``dilation = 3`` (nuclei): a starting value that :func:`calibrate` replaces.

    Parameters
    ----------
    stats : mapping
        From :func:`object_statistics`.
    foreground_factor : float, optional
        The extra loss weight of foreground pixels the network was trained with.

    Returns
    -------
    dict
        ``threshold``, ``min_size``, ``min_distance``, ``min_depth``, ``dilation`` and
        ``derived_from`` (the radius, 5th area percentile and foreground factor used); JSON-ready.

    Examples
    --------
    >>> s = {"radius": 15.0, "area_percentiles": {"5": 300.0}}
    >>> d = derived_settings(s)
    >>> d["min_size"], d["min_distance"], d["min_depth"], d["threshold"]
    (150, 9, 0.6, 0.5)
    >>> derived_settings(s, foreground_factor=3.0)["threshold"]
    0.75
    """
    radius = float(stats.get("radius", 0.0))
    low = float(stats.get("area_percentiles", {}).get("5", 0.0))
    if not radius > 0 or not low > 0:
        raise ValueError("the training labels hold no objects: cannot derive instance settings")
    f = None if foreground_factor is None else float(foreground_factor)
    if f is not None and not f > 0:
        raise ValueError(f"foreground_factor must be positive, got {foreground_factor}")
    return {
        "threshold": 0.5 if f is None else round(f / (1.0 + f), 3),
        "min_size": max(4, int(round(MIN_SIZE_FRACTION * low))),
        "min_distance": max(2, int(round(SEED_SPACING_FRACTION * radius))),
        "min_depth": round(max(MIN_DEPTH_FLOOR, DEPTH_FRACTION * radius), 3),
        "dilation": 3,
        "derived_from": {"radius": radius, "area_p5": low, "foreground_factor": f},
    }


def _size_filter(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects with fewer than ``min_size`` pixels (labels are not renumbered)."""
    sizes = np.bincount(labels.ravel())
    drop = sizes < max(int(min_size), 1)
    drop[0] = False
    if not drop.any():
        return labels
    out = labels.copy()
    out[drop[labels]] = 0
    return out


def _counts(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """(objects with F >= 0.6, truth objects, true positives at IoU 0.5, predicted objects), by the evaluator's own matching."""
    from stainseg.evaluate.matching import best_matches, match_iou, overlap_table

    table = overlap_table(truth, pred)
    above = int(np.count_nonzero(best_matches(table).fscore >= 0.6))
    tp = int(match_iou(table, thresholds=[0.5])["tp"][0])
    return above, table.n_truth, tp, table.n_pred


def pooled_score(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, float]:
    """Pooled fraction with F >= 0.6, F1@IoU0.5, their mean and the object counts.

    Examples
    --------
    >>> t = np.zeros((8, 8), np.int32); t[1:4, 1:4] = 1
    >>> pooled_score([t], [t])["score"]
    1.0
    """
    above = n_truth = tp = n_pred = 0
    for t, p in zip(truth, pred):
        a, nt, k, npred = _counts(np.asarray(t), np.asarray(p))
        above, n_truth, tp, n_pred = above + a, n_truth + nt, tp + k, n_pred + npred
    frac = above / n_truth if n_truth else float("nan")
    f1 = 2 * tp / (n_truth + n_pred) if n_truth + n_pred else 1.0
    return {"fraction_f_above": float(frac), "f1": float(f1), "score": float((frac + f1) / 2.0),
            "n_truth": int(n_truth), "n_pred": int(n_pred)}


def calibrate(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], base: Mapping[str, Any],
              grid: Optional[Mapping[str, Sequence]] = None) -> dict[str, Any]:
    """Choose threshold, dilation and a ``min_size`` multiplier by the pooled score on validation crops.

    Every combination of the grid is scored against ``labels`` (pooled over the crops) with the
    mean of F1@IoU0.5 and the fraction of objects with F >= 0.6. The watershed runs once per
    threshold (with no size filter and no dilation); the size filter and the dilation, which
    act after it, are applied to that cached result, so a grid of 5 x 7 x 3 costs 5 watersheds;
    each dilation grows the previous one by one ring.

    Parameters
    ----------
    probabilities : sequence of ndarray, shape (K, Y, X)
        Network outputs on the validation crops.
    labels : sequence of ndarray of int, shape (Y, X)
        Their automatic labels.
    base : mapping
        Starting settings (:func:`derived_settings`): ``min_size``, ``min_distance``, ``min_depth``
        are kept (``min_size`` times the chosen factor); the grid replaces the others.
    grid : mapping, optional
        ``threshold``, ``dilation`` (odd), ``min_size_factor`` sequences; missing keys take
        :data:`GRID`. Optional ``smoothing_factor``: Gaussian sigmas, as fractions of the typical
        radius ``base["derived_from"]["radius"]``, applied to the maps first
        (:func:`stainseg.segment.instances.smooth_probability`); only then do the settings hold ``smoothing`` (sigma in px),
        which ``probability_to_labels`` applies before its threshold.

    Returns
    -------
    dict
        ``settings``: the keyword arguments of ``probability_to_labels`` to use (``threshold``,
        ``min_size``, ``min_distance``, ``min_depth``, ``dilation``; ``smoothing`` when
        searched); ``score`` of the best combination; ``table``: one row per combination
        (``threshold``, ``dilation``, ``min_size_factor``, ``min_size``, ``smoothing`` when
        searched, ``fraction_f_above``, ``f1``, ``score``, ``n_truth``,
        ``n_pred``); ``crops``, ``objects`` (in the labels), ``threshold_fixed`` (True when fewer than
        :data:`MIN_CALIBRATION_OBJECTS` objects kept ``base["threshold"]`` instead of searching
        thresholds), ``kept_derived`` (True when the best score was below :data:`MIN_CALIBRATION_SCORE`
        and ``base``'s derived threshold, ``min_size`` and ``dilation`` were kept instead) and
        ``seconds``. Ties go to the smaller dilation, then the
        threshold closest to ``base["threshold"]`` (0.5 when absent; it joins the default
        grid), then the factor closest to 1 (and first to the least smoothing).

    Examples
    --------
    >>> lab = np.zeros((48, 48), np.int32); lab[8:20, 8:20] = 1; lab[28:40, 26:40] = 2
    >>> p = np.stack([1.0 - 0.8 * (lab > 0), 0.8 * (lab > 0)]).astype(np.float32)
    >>> out = calibrate([p], [lab], {"min_size": 20, "min_distance": 4, "min_depth": 0.5},
    ...                 {"threshold": (0.5, 0.9), "dilation": (1, 3), "min_size_factor": (1.0,)})
    >>> out["settings"]["threshold"], out["settings"]["dilation"]
    (0.5, 1)
    """
    if len(probabilities) != len(labels) or not len(labels):
        raise ValueError(f"calibrate needs as many probability maps as label images (got {len(probabilities)} and {len(labels)})")
    g = {**GRID, **(grid or {})}
    centre = float(base.get("threshold") or 0.5)
    labels = [np.asarray(lab) for lab in labels]
    n_objects = sum(int(np.count_nonzero(np.bincount(lab.ravel().astype(np.int64))[1:])) for lab in labels)
    threshold_fixed = (grid is None or "threshold" not in grid) and n_objects < MIN_CALIBRATION_OBJECTS
    if threshold_fixed:
        g["threshold"] = (centre,)
    elif grid is None or "threshold" not in grid:
        g["threshold"] = tuple(sorted(set(g["threshold"]) | {centre}))
    if any(int(d) < 1 or int(d) % 2 == 0 for d in g["dilation"]):
        raise ValueError(f"calibration dilations must be odd numbers >= 1, got {list(g['dilation'])}")
    start = time.perf_counter()
    keep = {k: base[k] for k in ("min_distance", "min_depth") if base.get(k) is not None}
    base_min = int(base.get("min_size") or 4)
    smoothing = g.get("smoothing_factor")
    radius = float((base.get("derived_from") or {}).get("radius", 0.0))
    if smoothing is not None and not radius > 0:
        raise ValueError("a smoothing_factor grid needs base['derived_from']['radius'] (from derived_settings)")
    table = []
    for factor_s in (smoothing if smoothing is not None else (None,)):
        sigma = None if factor_s is None else round(float(factor_s) * radius, 3)
        maps = probabilities if not sigma else [smooth_probability(p, sigma) for p in probabilities]
        extra = {} if sigma is None else {"smoothing": sigma}
        table += _grid_rows(maps, labels, g, keep, base_min, extra)
    best = min(table, key=lambda r: (-r["score"], r.get("smoothing", 0.0), r["dilation"], abs(r["threshold"] - centre),
                                     abs(np.log(r["min_size_factor"]))))
    settings = {**keep, "threshold": best["threshold"], "min_size": best["min_size"], "dilation": best["dilation"]}
    if "smoothing" in best:
        settings["smoothing"] = best["smoothing"]
    rejected = best["score"] < MIN_CALIBRATION_SCORE and base.get("dilation") is not None
    if rejected:  # nothing fits: keep what the labels gave
        fixed = len(g["dilation"]) == 1  # a dilation set in the config stays
        settings = {**keep, "threshold": centre, "min_size": base_min,
                    "dilation": int(g["dilation"][0] if fixed else base["dilation"])}
        if "smoothing" in best:
            settings["smoothing"] = 0.0
    return {"settings": settings, "score": best, "table": table, "crops": len(labels), "objects": n_objects,
            "threshold_fixed": threshold_fixed, "kept_derived": rejected, "seconds": round(time.perf_counter() - start, 3)}


def _grid_rows(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], g: Mapping[str, Sequence],
               keep: Mapping[str, Any], base_min: int, extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Score rows of every threshold x min_size factor x dilation on one set of maps (one watershed per threshold)."""

    rows = []
    for threshold in g["threshold"]:
        raw = [probability_to_labels(p, threshold=float(threshold), min_size=1, dilation=1, **keep) for p in probabilities]
        for factor in g["min_size_factor"]:
            min_size = max(4, int(round(base_min * float(factor))))
            pred = [_size_filter(r, min_size) for r in raw]
            reach = 0
            for d in sorted(int(x) for x in g["dilation"]):
                # one more ring of the same breadth-first growth: dilation d from dilation d - 2
                grow = 2 * ((d - 1) // 2 - reach) + 1
                if grow > 1:
                    pred = [dilate_labels(k, grow) for k in pred]
                reach = (d - 1) // 2
                rows.append({"threshold": float(threshold), "dilation": int(d), "min_size_factor": float(factor),
                             "min_size": min_size, **extra, **pooled_score(labels, pred)})
    return rows
