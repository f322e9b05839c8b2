"""Objects of a huge probability map, band by band (the block-wise path's instance settings and object table).

:func:`whole_map_options` derives the settings an untrained model lacks from the whole map, a
band of rows at a time; :func:`object_table` measures every object of a label array band by band,
with the columns and values of the whole-image table.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from stainseg.segment.band_prepare import BAND_ROWS
from stainseg.segment.rows import ImageRows

__all__ = ["whole_map_options", "object_table", "bands"]




def bands(height: int, band: int, margin: int) -> Iterator[tuple[int, int, int, int]]:
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        yield y0, y1, max(0, y0 - margin), min(height, y1 + margin)


def whole_map_options(prob: Any, options: dict[str, Any], band: int, margin: int) -> dict[str, Any]:
    """``options`` with a missing ``min_distance`` and ``min_size`` derived from the whole map, band by band.

    :func:`stainseg.segment.instances.probability_to_labels` derives them from the image it is given;
    a band is not the image. ``min_distance``: 0.6 x the typical radius (3 x the mean smoothed
    distance to the background over every mask pixel); ``min_size``: 10 % of the median area of
    every object (before the size filter), each object counted by the band holding its top row.
    Set values are kept (a trained model has both), so this costs nothing for them.

    Examples
    --------
    >>> prob = np.zeros((2, 200, 120), np.float32); prob[0] = 1
    >>> prob[:, 20:40, 20:40] = [[[0.0]], [[1.0]]]; prob[:, 150:160, 50:60] = [[[0.0]], [[1.0]]]
    >>> whole_map_options(prob, {"threshold": 0.5, "min_size": None, "min_distance": None, "min_depth": None,
    ...                          "smoothing": None, "dilation": 1}, band=64, margin=32)["min_size"]
    25
    """
    from stainseg.segment.instances import probability_to_labels, smooth_probability
    from stainseg.segment.seeds import distance_map, mask_components

    options = dict(options)
    k, height, _ = prob.shape
    if options.get("min_distance") is None and k == 2:
        total, count = 0.0, 0
        for y0, y1, e0, e1 in bands(height, band, margin):
            p = np.asarray(prob[:, e0:e1], np.float32)
            if options.get("smoothing"):
                p = smooth_probability(p, float(options["smoothing"]))
            mask = (1.0 - p[0]) > options["threshold"]
            if not mask.any():
                continue
            dist = distance_map(mask, mask_components(mask))[y0 - e0:y1 - e0]
            core = mask[y0 - e0:y1 - e0]
            total += float(dist[core].sum(dtype=np.float64))
            count += int(core.sum())
        options["min_distance"] = max(2, int(round(0.6 * 3.0 * total / count))) if count else 2
    if options.get("min_size") is None:
        areas = []
        for y0, y1, e0, e1 in bands(height, band, margin):
            labels = probability_to_labels(np.asarray(prob[:, e0:e1], np.float32), options["threshold"], 1, 1,
                                           options.get("min_distance"), options.get("min_depth"), options.get("smoothing"))
            sizes = np.bincount(labels.ravel())
            for i, box in enumerate(ndi.find_objects(labels), start=1):
                if box is None:
                    continue
                cut = (box[0].start == 0 and e0 > 0) or (box[0].stop == e1 - e0 and e1 < height)
                if y0 <= box[0].start + e0 < y1 and not cut:
                    areas.append(int(sizes[i]))
        options["min_size"] = max(4, int(0.1 * np.median(areas))) if areas else 4
    return options


# --------------------------------------------------------------------------- object table


def object_table(name: str, labels: Any, source: ImageRows, channel_names: Sequence[str], objects: int,
                 uncertainty: Any = None, band: int = BAND_ROWS) -> list[dict[str, Any]]:
    """One row per object of a block-wise label image, measured band by band (label-indexed sums).

    The columns and values of :func:`stainseg.stages.segment.cell_table` on the whole image: image,
    label, area, centroid, mean of each raw input plane, mean uncertainty (when given).

    Examples
    --------
    >>> from stainseg.segment.rows import open_rows
    >>> labels = np.zeros((6, 5), np.uint32); labels[1:3, 1:3] = 1; labels[4:6, 0:5] = 2
    >>> rows = object_table("x", labels, open_rows(np.arange(30.0).reshape(6, 5)), ["DNA"], 2, band=4)
    >>> [(r["label"], r["area"], r["centroid_y"], r["mean_DNA"]) for r in rows]
    [(1, 4, 1.5, 9.0), (2, 10, 4.5, 24.5)]
    """
    from stainseg.segment.band_prepare import _as_float

    height, width = int(labels.shape[0]), int(labels.shape[1])
    size = objects + 1
    area = np.zeros(size, np.int64)
    sum_y, sum_x = np.zeros(size), np.zeros(size)
    sums = np.zeros((source.shape[0], size))
    sum_u = np.zeros(size) if uncertainty is not None else None
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        lab = np.asarray(labels[y0:y1]).ravel()
        where = np.flatnonzero(lab)
        if where.size == 0:
            continue
        flat = lab[where].astype(np.intp)
        area += np.bincount(flat, minlength=size)
        sum_y += np.bincount(flat, weights=where // width + y0, minlength=size)
        sum_x += np.bincount(flat, weights=where % width, minlength=size)
        raw = _as_float(source.rows(y0, y1), source.where)
        for c in range(raw.shape[0]):
            sums[c] += np.bincount(flat, weights=raw[c].ravel()[where], minlength=size)
        if sum_u is not None:
            sum_u += np.bincount(flat, weights=np.asarray(uncertainty[y0:y1], np.float32).ravel()[where], minlength=size)
    present = np.flatnonzero(area[1:]) + 1
    count = area[present].astype(np.float64)
    rows = []
    for i, lab in enumerate(present):
        row: dict[str, Any] = {"image": name, "label": int(lab), "area": int(area[lab]),
                               "centroid_y": round(float(sum_y[lab] / count[i]), 2), "centroid_x": round(float(sum_x[lab] / count[i]), 2)}
        for c, ch in enumerate(channel_names):
            row[f"mean_{ch}"] = round(float(sums[c, lab] / count[i]), 3)
        if sum_u is not None:
            row["uncertainty"] = round(float(sum_u[lab] / count[i]), 4)
        rows.append(row)
    return rows


