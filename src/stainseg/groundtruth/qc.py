"""Quality control of automatic labels: per-image-set numbers and robust plate-wide exclusion.

A bad stain, an out-of-focus field or a failed threshold gives labels that would teach the network
the wrong thing. Each image set gets a few numbers (:func:`qc_metrics`); :func:`qc_table` marks the
image sets whose numbers lie outside the plate's median +- ``qc_mad`` robust standard deviations
(1.4826 x MAD) as excluded, with a readable reason. Each reason starts with a code of the quality
vocabulary shared with segmentation (:data:`stainseg.quality.FLAG_MEANINGS`), e.g. ``blank: ...``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from stainseg.quality import FLAG_MEANINGS

#: metric -> which side is bad: "both", "high" or "low".
QC_RULES: dict[str, str] = {
    "n_objects": "both",
    "median_area": "both",
    "foreground_fraction": "both",
    "area_outlier_fraction": "high",
    "contrast": "low",
    "signal_to_noise": "low",
}

_NAMES = {
    "n_objects": "object count",
    "median_area": "median object area",
    "foreground_fraction": "foreground fraction",
    "area_outlier_fraction": "fraction of split/merged-sized objects",
    "contrast": "stain contrast (foreground / background)",
    "signal_to_noise": "signal-to-noise ratio of the stain",
}

#: (metric, side) -> quality flag code (:data:`stainseg.quality.FLAG_MEANINGS`) of an out-of-range value.
QC_CODES: dict[tuple[str, str], str] = {
    ("n_objects", "low"): "too_few_objects", ("n_objects", "high"): "too_many_objects",
    ("median_area", "low"): "object_size", ("median_area", "high"): "object_size",
    ("foreground_fraction", "low"): "too_few_objects", ("foreground_fraction", "high"): "too_many_objects",
    ("area_outlier_fraction", "high"): "object_size",
    ("contrast", "low"): "low_signal", ("signal_to_noise", "low"): "low_signal",
}

#: Smallest robust spread, as a fraction of the plate median, so identical image sets (MAD 0)
#: are not excluded for a tiny difference.
RELATIVE_SPREAD_FLOOR = 0.05
#: Fewer image sets than this: no plate statistics, only the hard flags (no objects, flat stain).
MIN_SETS_FOR_STATS = 4


def qc_metrics(labels: np.ndarray, stain: np.ndarray | None = None) -> dict[str, Any]:
    """Numbers describing one image set's automatic labels.

    Parameters
    ----------
    labels : (Y, X) ndarray of int
        Instance labels, 0 = background.
    stain : (Y, X) ndarray, optional
        The (corrected, projected) stain the labels came from, for the contrast.

    Returns
    -------
    dict
        ``n_objects``; ``median_area`` (px); ``foreground_fraction``; ``area_outlier_fraction``
        (objects below half or above twice the median area: likely split or merged);
        ``contrast`` (median stain inside objects / median outside; nan without a stain);
        ``signal_to_noise`` ((median inside - median outside) / robust standard deviation outside);
        ``flag`` (``""`` or a hard problem: no objects, flat stain).
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel().astype(np.int64))[1:] if labels.size else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    n = int(areas.size)
    median_area = float(np.median(areas)) if n else 0.0
    outliers = float(np.mean((areas < 0.5 * median_area) | (areas > 2.0 * median_area))) if n else 0.0
    inside = labels > 0
    contrast = snr = float("nan")
    flag = ""
    if stain is not None:
        stain = np.asarray(stain, np.float32)
        if stain.size == 0 or float(stain.max()) == float(stain.min()):
            flag = "blank: stain image is flat (constant); check the file and the channel name"
        elif n and not inside.all():
            bg = float(np.median(stain[~inside]))
            fg = float(np.median(stain[inside]))
            contrast = fg / bg if bg > 0 else float("inf")
            noise = 1.4826 * float(np.median(np.abs(stain[~inside] - bg)))
            snr = (fg - bg) / noise if noise > 0 else float("inf")
    if not flag and n == 0:
        flag = "too_few_objects: no objects found in the stain"
    return {
        "n_objects": n,
        "median_area": median_area,
        "foreground_fraction": float(inside.mean()) if labels.size else 0.0,
        "area_outlier_fraction": outliers,
        "contrast": contrast,
        "signal_to_noise": snr,
        "flag": flag,
    }


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def qc_table(rows: Iterable[Mapping[str, Any]], qc_mad: float = 3.0) -> list[dict[str, Any]]:
    """Mark image sets whose QC numbers are outliers of the plate.

    Parameters
    ----------
    rows : iterable of mappings
        One per image set, holding the keys of :func:`qc_metrics` (other keys, e.g. the image set's
        name, are passed through).
    qc_mad : float
        Allowed distance from the plate median in robust standard deviations (1.4826 x MAD, floored
        at 5 % of the median so identical image sets do not make the range empty).

    Returns
    -------
    list of dict
        The rows with ``exclude`` (bool), ``reason`` (``""`` or why, one line, each part starting with
        its flag code) and ``codes`` (the flag codes, ``;``-separated) added.
    """
    rows = [dict(r) for r in rows]
    ranges: dict[str, tuple[float, float, float]] = {}
    if len(rows) >= MIN_SETS_FOR_STATS:
        for key in QC_RULES:
            values = np.array([float(r.get(key, np.nan)) for r in rows if not r.get("flag")], dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size < MIN_SETS_FOR_STATS:
                continue
            median = float(np.median(values))
            spread = max(1.4826 * float(np.median(np.abs(values - median))), RELATIVE_SPREAD_FLOOR * abs(median), 1e-9)
            ranges[key] = (median, median - qc_mad * spread, median + qc_mad * spread)
    for row in rows:
        reasons, codes = [], []
        if row.get("flag"):
            reasons.append(str(row["flag"]))
            head = str(row["flag"]).split(":", 1)[0]
            codes.append(head if head in FLAG_MEANINGS else "blank")
        else:
            for key, (median, low, high) in ranges.items():
                value = float(row.get(key, np.nan))
                if not np.isfinite(value):
                    continue
                side = QC_RULES[key]
                for bad, word in (("low", "below"), ("high", "above")):
                    if side in ("both", bad) and (value < low if bad == "low" else value > high):
                        code = QC_CODES[(key, bad)]
                        codes.append(code)
                        reasons.append(f"{code}: {_NAMES[key]} {_fmt(value)} is {word} the plate range "
                                       f"{_fmt(low)}..{_fmt(high)} (median {_fmt(median)})")
        row["exclude"] = bool(reasons)
        row["reason"] = "; ".join(reasons)
        row["codes"] = ";".join(dict.fromkeys(codes))
    return rows
