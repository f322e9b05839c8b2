"""Watershed seeds from a foreground mask, and the merge of basins that no real neck divides (METHOD.md 5.3).

- :func:`distance_seeds`: maxima of the smoothed Euclidean distance to the background, at least
  ``min_distance`` apart (the seeds ``peak_local_max`` would give, found faster), the flood surface
  and the distance map itself.
- :func:`seed_unseeded`: every mask component without a seed gets one.
- :func:`merge_shallow_basins`: touching basins whose dividing saddle is less than ``min_depth``
  below the lower peak become one (the h-maxima "dynamics" criterion, computed on the basins).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage as ndi

#: Tied maxima grouped closer than this many pixels are spaced one by one (larger groups on a grid).
GREEDY_LIMIT = 20_000
#: Up to this many peaks, tied-peak groups come from a neighbour graph instead of two passes over the image.
PEAK_GRAPH_LIMIT = 20_000


def distance_peaks(dist: np.ndarray, mask: np.ndarray, min_distance: int,
                   components: tuple[np.ndarray, int] | None = None, boxes: list | None = None) -> np.ndarray:
    """Seed markers at the local maxima of ``dist``, at least ``min_distance`` apart.

    The same seeds as ``skimage.feature.peak_local_max(dist, min_distance, exclude_border=False)``
    (chessboard distance; of tied peaks closer than ``d`` the first in raster order is kept),
    found faster: a pixel is a peak when it equals the maximum of its ``(2 d + 1)`` square
    window, and two such peaks closer than ``d`` must be ties, so only groups of tied peaks
    linked by steps shorter than ``d`` need the one-by-one spacing check (each group alone). A group of more than ``GREEDY_LIMIT``
    pixels (a poor map with huge plateaus, where the check would take minutes) keeps the first
    pixel of each ``(d + 1)`` grid cell instead.

    With ``components`` (``mask_components(mask)``; ``boxes`` as in :func:`distance_map`), the
    window maxima are taken in each component's box grown by ``d`` (the window of a component
    pixel lies in it; boxes clipped at the image border reflect there as the whole-image filter
    does), which skips the background: the same peaks, 1.5x faster on a BBBC039 map.
    """
    d = max(1, int(min_distance))
    if components is not None and boxes is None:
        boxes = _component_boxes(*components)
    if components is not None and _crop_wise(boxes, d, mask.shape):
        labels = components[0]
        peaks = np.zeros(mask.shape, bool)
        for k, box in boxes:
            box = _grow(box, d, mask.shape)
            local = dist[box]
            peaks[box] |= (labels[box] == k) & (local == ndi.maximum_filter(local, size=2 * d + 1)) & (local > 0)
    else:
        peaks = (dist == ndi.maximum_filter(dist, size=2 * d + 1)) & mask & (dist > 0)
    ys, xs = np.nonzero(peaks)  # raster order
    markers = np.zeros(mask.shape, np.int32)
    if ys.size == 0:
        return markers
    groups = _peak_groups(peaks, ys, xs, d)
    order = np.argsort(groups, kind="stable")  # by group, raster order within a group
    sizes = np.bincount(groups)
    keep = np.ones(ys.size, bool)
    start = 0
    for group in np.flatnonzero(sizes):
        idx = order[start : start + sizes[group]]
        start += sizes[group]
        if idx.size == 1:
            continue
        py, px = ys[idx], xs[idx]
        if idx.size > GREEDY_LIMIT:
            cell = (py // (d + 1)) * (mask.shape[1] // (d + 1) + 1) + px // (d + 1)
            first = np.zeros(idx.size, bool)
            first[np.unique(cell, return_index=True)[1]] = True
            keep[idx[~first]] = False
            continue
        kept: list[tuple[int, int]] = []  # plain Python: groups are small, numpy calls cost more
        for i, (y, x) in enumerate(zip(py.tolist(), px.tolist())):
            if any(abs(y - ky) < d and abs(x - kx) < d for ky, kx in kept):
                keep[idx[i]] = False
            else:
                kept.append((y, x))
    markers[ys[keep], xs[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return markers


def _peak_groups(peaks: np.ndarray, ys: np.ndarray, xs: np.ndarray, d: int) -> np.ndarray:
    """Group number of each peak: peaks linked by chains of steps shorter than ``d`` share a group.

    Squares of side ``d - 1`` around two peaks touch (8-connected) exactly when the peaks are at
    most ``max(d - 1, 1)`` apart in chessboard distance, so the groups are the connected
    components of that neighbour graph (a KD-tree, on the few thousand peaks of a real map) or,
    equivalently, the labels of the dilated peak image (two whole-image passes; used when the
    peaks are so many that the graph would be large).
    """
    reach = max(d - 1, 1)
    if ys.size <= PEAK_GRAPH_LIMIT:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        tree = cKDTree(np.stack([ys, xs], axis=1))
        # count first (pairs in both orders plus each point with itself): a dense plateau of tied
        # peaks would make millions of pairs
        if tree.count_neighbors(tree, reach, p=np.inf) <= 64 * ys.size:
            pairs = tree.query_pairs(reach, p=np.inf, output_type="ndarray")
            graph = coo_matrix((np.ones(pairs.shape[0], bool), (pairs[:, 0], pairs[:, 1])), shape=(ys.size, ys.size))
            return connected_components(graph, directed=False)[1]
    linked = ndi.maximum_filter(peaks.view(np.uint8), size=d - 1) if d > 2 else peaks.view(np.uint8)
    return ndi.label(linked, structure=np.ones((3, 3), bool))[0][ys, xs]


#: Default ``min_depth`` of :func:`stainseg.segment.instances.probability_to_labels`, in px (measured: docs/network.md).
MIN_DEPTH = 0.5
#: Gaussian smoothing (px) of the distance map that seeds and basin depths are taken from.
SEED_SIGMA = 1.0


def typical_radius(distance: np.ndarray, mask: np.ndarray) -> float:
    """Typical object radius in px from the distance to the background inside ``mask``.

    Inside a disk of radius R the mean distance to the edge is R / 3; unlike component areas,
    this is not inflated by clusters of touching objects.
    """
    return 3.0 * float(distance[mask].mean()) if mask.any() else 0.0


#: Crop-wise distance maps pay per component; beyond this many, one whole-image pass is cheaper.
CROP_LIMIT = 5_000


def mask_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of ``mask`` (``ndi.label``), computed once and shared by the seed steps."""
    return ndi.label(mask)


def _grow(box: tuple[slice, slice], pad: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A bounding box grown by ``pad`` px on every side, clipped to the image."""
    rows, cols = box
    return (slice(max(rows.start - pad, 0), min(rows.stop + pad, shape[0])),
            slice(max(cols.start - pad, 0), min(cols.stop + pad, shape[1])))


def _component_boxes(components: np.ndarray, n: int) -> list[tuple[int, tuple[slice, slice]]] | None:
    """(label, bounding box) of every component, or None beyond ``CROP_LIMIT`` components."""
    if n == 0 or n > CROP_LIMIT:
        return None
    return [(k, box) for k, box in enumerate(ndi.find_objects(components, max_label=n), start=1) if box is not None]


def _crop_wise(boxes: list | None, pad: int, shape: tuple[int, int]) -> bool:
    """Whether per-box work pays: the boxes grown by ``pad`` cover less than 60 % of the image."""
    if boxes is None:
        return False
    area = 0
    for _, box in boxes:
        rows, cols = _grow(box, pad, shape)
        area += (rows.stop - rows.start) * (cols.stop - cols.start)
    return area < 0.6 * shape[0] * shape[1]


def distance_map(mask: np.ndarray, components: tuple[np.ndarray, int] | None = None,
                 boxes: list | None = None) -> np.ndarray:
    """Euclidean distance to the background, smoothed by a ``SEED_SIGMA`` Gaussian, zero outside ``mask`` (float32).

    The same values, bit for bit, as ``gaussian_filter(distance_transform_edt(mask).astype(float32),
    SEED_SIGMA, output=float32) * mask``, computed in the bounding box of each mask component
    instead of on the whole image (3x faster on a 2048 x 2048 BBBC039 map, where the mask covers
    17 % of it). Exact because the pixel of the background nearest to a pixel of a 4-connected
    component lies in the component's box grown by 1 px: step from that background pixel one
    pixel towards the component pixel along x or y; the step is closer, so it is in the
    component, and the background pixel touches the component. The Gaussian of a pixel reads
    only the pixels within its ``4 sigma`` radius, so each component's box is grown by that for
    the smoothing (the same per-pixel sums as the whole-image filter; boxes clipped at the image
    border reflect there as the whole-image filter does).

    Parameters
    ----------
    mask : (Y, X) bool ndarray
    components : (labels, n), optional
        ``mask_components(mask)``, when the caller has it already.
    boxes : list, optional
        ``_component_boxes(*components)``, when the caller has them already.

    Examples
    --------
    >>> mask = np.zeros((9, 9), bool); mask[2:7, 2:7] = True
    >>> d = distance_map(mask)
    >>> int(np.argmax(d)) == 4 * 9 + 4, float(d[0, 0])
    (True, 0.0)
    """
    mask = np.asarray(mask, bool)
    labels, n = components if components is not None else mask_components(mask)
    radius = max(1, int(4.0 * SEED_SIGMA + 0.5))  # gaussian_filter's default truncate = 4.0
    if boxes is None:
        boxes = _component_boxes(labels, n)
    if not _crop_wise(boxes, radius, mask.shape):
        distance = ndi.distance_transform_edt(mask).astype(np.float32)
        if SEED_SIGMA > 0:
            distance = ndi.gaussian_filter(distance, SEED_SIGMA, output=np.float32)
            distance *= mask
        return distance
    distance = np.zeros(mask.shape, np.float32)
    for k, box in boxes:  # the exact distance of each component's pixels, from its box + 1 px
        box = _grow(box, 1, mask.shape)
        own = labels[box] == k
        distance[box][own] = ndi.distance_transform_edt(mask[box])[own]
    if SEED_SIGMA <= 0:
        return distance
    # gaussian_filter's own weights (its response to a unit impulse), so that two correlate1d
    # calls per box do what it does, without recomputing the kernel ~1,000 times
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    weights = ndi.gaussian_filter1d(impulse, SEED_SIGMA, mode="constant")
    smooth = np.zeros(mask.shape, np.float32)
    for k, box in boxes:  # the Gaussian at each component's pixels, from its box + 4 sigma
        box = _grow(box, radius, mask.shape)
        own = labels[box] == k
        part = ndi.correlate1d(distance[box], weights, axis=0, output=np.float32, mode="reflect")
        ndi.correlate1d(part, weights, axis=1, output=part, mode="reflect")
        smooth[box][own] = part[own]
    return smooth


def distance_seeds(mask: np.ndarray, min_distance: Optional[int],
                   components: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds from maxima of the smoothed distance transform: (markers, flood surface, distance).

    Euclidean distance to the background, smoothed by a ``SEED_SIGMA`` Gaussian and zero outside
    the mask (:func:`distance_map`; ``components`` as there). The exact metric and the smoothing matter for seeds that do not move with the
    pixel grid: with the octagonal chamfer distance (5x faster) and no smoothing, a 1-px change
    of an outline adds or removes maxima along the ridge of an elongated nucleus. Segmenting the
    29 held-out BBBC039 images and the same images moved by (37, 91) px left 111 of 2,968 nuclei
    unmatched between the two (F1 0.981); with this map and :func:`merge_shallow_basins`, 30 of
    2,855 (F1 0.9948), and F1 against the manual masks rose from 0.906 to 0.923
    (benchmarks/seams.py, docs/network.md).
    """
    components = components if components is not None else mask_components(mask)
    boxes = _component_boxes(*components)  # found once for the distance map and the peaks
    distance = distance_map(mask, components, boxes)
    if min_distance is None:
        min_distance = max(2, int(round(0.6 * typical_radius(distance, mask))))
    markers = distance_peaks(distance, mask, int(min_distance), components, boxes)
    # the flood surface in 1/64-px levels (uint16, up to 1023 px from the edge): coarser levels
    # (uint8 half-px) leave tied plateaus whose flooding order depends on the band of
    # watershed_bands; with these, bands and whole image agree pixel for pixel, at the same speed
    surface = (65535.0 - np.minimum(np.rint(64.0 * distance), 65535.0)).astype(np.uint16)
    return markers, surface, distance


def seed_unseeded(markers: np.ndarray, mask: np.ndarray, components: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """Give every connected component of ``mask`` without a marker one marker (its own label).

    ``components``: ``mask_components(mask)``, when the caller has it already.
    """
    components, n = components if components is not None else mask_components(mask)
    if n == 0:
        return markers
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    seeded[0] = True
    if seeded.all():
        return markers
    missing = ~seeded
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[missing] = markers.max() + np.arange(1, int(missing.sum()) + 1)
    out = markers.astype(np.int32)  # a copy
    where = missing[components]  # only the unseeded components' pixels are written
    out[where] = lut[components[where]]
    return out


def _label_maxima(labels: np.ndarray, height: np.ndarray, n: int) -> np.ndarray:
    """Highest ``height`` of each label 0..n (float64; -inf for absent labels and for 0).

    A stable argsort of the labels (a radix sort for uint16 keys) and ``maximum.reduceat``:
    3x faster than ``np.maximum.at`` on a 2048 x 2048 map, which is itself 3.5x faster than
    ``ndi.maximum``; maxima are exact, so all three give the same values.
    """
    flat = labels.ravel()
    inside = flat > 0
    keys, values = flat[inside], height.ravel()[inside]
    if n <= np.iinfo(np.uint16).max:
        keys = keys.astype(np.uint16)
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    peak = np.full(n + 1, -np.inf)
    if keys.size:
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        peak[keys[starts]] = np.maximum.reduceat(values, starts)
    return peak


def merge_shallow_basins(labels: np.ndarray, height: np.ndarray, min_depth: float) -> np.ndarray:
    """Merge touching basins whose dividing saddle is less than ``min_depth`` below the lower peak.

    The "dynamics" criterion of h-maxima seeds, computed on the basins of a watershed instead
    of by morphological reconstruction (skimage's ``h_maxima`` costs ~5 s on a 2048^2 map):
    a basin's peak is its highest ``height`` value; the saddle of two 4-connected touching
    basins is the highest ``min(height[p], height[q])`` over the pixel pairs across their
    border. Borders are taken highest saddle first (union-find), each merge keeping the higher
    peak, which reproduces the nesting of flooding. A split then needs a real neck (a dip of at
    least ``min_depth``), not a bump of the outline: small changes of the outline no longer
    decide between one and two objects.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Watershed basins, 0 = background (left as it is).
    height : ndarray, shape (Y, X)
        The surface the basins were flooded from, high in object centres (e.g. the distance
        to the background).
    min_depth : float
        Smallest dip, in ``height`` units, that keeps two basins apart.

    Returns
    -------
    ndarray
        Labels of the same dtype; a merged group takes the label of the basin with the
        higher peak (labels are not renumbered).

    Examples
    --------
    >>> h = np.array([[0, 3, 2, 3, 0, 5, 1, 5, 0]], float)   # a shallow neck, then a deep one
    >>> lab = np.array([[0, 1, 1, 2, 0, 3, 3, 4, 0]])
    >>> merge_shallow_basins(lab, h, 2.0)[0].tolist()
    [0, 1, 1, 1, 0, 3, 3, 4, 0]
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n < 2 or min_depth <= 0:
        return labels
    height = np.asarray(height)
    peak = _label_maxima(labels, height, n)
    keys, saddles = [], []
    for cut_a, cut_b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1], np.s_[1:])):
        a, b = labels[cut_a], labels[cut_b]
        cross = (a != b) & (a > 0) & (b > 0)
        la, lb = a[cross].astype(np.int64), b[cross].astype(np.int64)
        keys.append(np.minimum(la, lb) * (n + 1) + np.maximum(la, lb))
        saddles.append(np.minimum(height[cut_a][cross], height[cut_b][cross]))
    key, saddle = np.concatenate(keys), np.concatenate(saddles)
    if key.size == 0:
        return labels
    order = np.lexsort((-saddle, key))  # by pair, highest saddle first
    key, saddle = key[order], saddle[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    pair_key, pair_saddle = key[first], saddle[first].astype(np.float64)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = False
    for k in np.argsort(-pair_saddle, kind="stable").tolist():
        ra, rb = root(int(pair_key[k] // (n + 1))), root(int(pair_key[k] % (n + 1)))
        if ra == rb or min(peak[ra], peak[rb]) - pair_saddle[k] >= min_depth:
            continue
        if peak[ra] < peak[rb] or (peak[ra] == peak[rb] and rb < ra):
            ra, rb = rb, ra
        parent[rb] = ra  # the higher peak's basin absorbs the other
        merged = True
    if not merged:
        return labels
    lut = np.array([root(i) for i in range(n + 1)], dtype=labels.dtype)
    return lut[labels]
