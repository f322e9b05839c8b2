"""From a probability map to labelled objects: seeds, watershed, size filter, dilation (METHOD.md 5.3-5.4).

- Foreground mask: ``1 - p_background > threshold``.
- Seeds: with a 3-class map (background, interior, boundary), the connected components of
  ``p_interior > threshold``; with a 2-class map, the maxima (``peak_local_max``) of the
  smoothed Euclidean distance transform of the mask. Mask components without a seed get one.
- Watershed limited to the mask, on ``-p_interior`` (3-class) or ``-distance`` (2-class).
- 2-class: touching basins whose dividing saddle is less than ``min_depth`` below the lower
  peak are merged (the h-maxima "dynamics" criterion, computed on the basins; ``h_maxima``
  itself is ~40x slower on a 2048 x 2048 map, PERF-NOTES.md).
- Objects smaller than ``min_size`` are removed (default: 10 % of the median object area).
- Dilation by a ``d x d`` square: every background pixel within chessboard distance
  ``(d - 1) / 2`` of an object takes the label of the nearest object (chessboard metric; ties
  go to the larger label). Object pixels are never changed, so neighbours are never overwritten or
  merged; where two objects compete, the gap is split between them.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from stainseg.io.images import label_dtype


def dilate_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Grow every label by a ``size x size`` square without overwriting other labels.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Instance labels, 0 = background.
    size : int
        Odd side of the square (1 = unchanged; paper: 9 for cells, 3 for nuclei). A square of
        side ``d`` reaches chessboard distance ``(d - 1) // 2``.

    Returns
    -------
    ndarray
        Same dtype; existing label pixels are unchanged, background pixels within reach take
        the label of the nearest object (chessboard distance; ties go to the larger label).

    Examples
    --------
    >>> lab = np.zeros((5, 7), np.uint16); lab[2, 1] = 1; lab[2, 5] = 2
    >>> dilate_labels(lab, 3)[2]
    array([1, 1, 1, 0, 2, 2, 2], dtype=uint16)
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"dilation size must be an odd number >= 1, got {size}")
    reach = (size - 1) // 2
    labels = np.asarray(labels)
    if reach == 0 or not labels.any():
        return labels.copy()
    # Breadth-first growth, one chessboard ring per step: a background pixel next to an
    # object takes the largest neighbouring label (ties between equidistant objects), pixels
    # already labelled never change. After `reach` steps every background pixel within
    # chessboard distance `reach` holds the label of a nearest object.
    out = labels.copy()
    footprint = np.ones((3, 3), bool)
    for _ in range(reach):
        grown = ndi.grey_dilation(out, footprint=footprint)
        background = out == 0
        if not (background & (grown > 0)).any():
            break
        out[background] = grown[background]
    return out


def _relabel_sizes(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """Drop objects smaller than ``min_size`` and relabel 1..n in one pass (bincount + lookup)."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lut = np.zeros(sizes.shape[0], dtype=np.int64)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    n = int(keep.sum())
    return lut.astype(label_dtype(n))[labels], n


def _flood_surface(height: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] "height" (high inside objects) to the uint8 surface the watershed floods.

    skimage's watershed is ~2x faster on uint8 than on float, and 256 levels are plenty.
    """
    return (255.0 - 255.0 * np.clip(height, 0.0, 1.0)).astype(np.uint8)


#: Tied maxima grouped closer than this many pixels are spaced one by one (larger groups on a grid).
_GREEDY_LIMIT = 20_000


def _distance_peaks(dist: np.ndarray, mask: np.ndarray, min_distance: int) -> np.ndarray:
    """Seed markers at the local maxima of ``dist``, at least ``min_distance`` apart.

    The same seeds as ``skimage.feature.peak_local_max(dist, min_distance, exclude_border=False)``
    (chessboard distance; of tied peaks closer than ``d`` the first in raster order is kept),
    found faster: a pixel is a peak when it equals the maximum of its ``(2 d + 1)`` square
    window, and two such peaks closer than ``d`` must be ties, so only groups of tied peaks
    linked by steps shorter than ``d`` need the one-by-one spacing check (each group alone). A group of more than ``_GREEDY_LIMIT``
    pixels (a poor map with huge plateaus, where the check would take minutes) keeps the first
    pixel of each ``(d + 1)`` grid cell instead.
    """
    d = max(1, int(min_distance))
    peaks = (dist == ndi.maximum_filter(dist, size=2 * d + 1)) & mask & (dist > 0)
    ys, xs = np.nonzero(peaks)  # raster order
    markers = np.zeros(mask.shape, np.int32)
    if ys.size == 0:
        return markers
    # squares of side d - 1 around two peaks touch when the peaks are less than d apart
    linked = ndi.maximum_filter(peaks.view(np.uint8), size=d - 1) if d > 2 else peaks.view(np.uint8)
    groups = ndi.label(linked, structure=np.ones((3, 3), bool))[0][ys, xs]
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
        if idx.size > _GREEDY_LIMIT:
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


#: Default ``min_depth`` of :func:`probability_to_labels`, in px (measured: docs/network.md).
MIN_DEPTH = 0.5
#: Gaussian smoothing (px) of the distance map that seeds and basin depths are taken from.
SEED_SIGMA = 1.0


def typical_radius(distance: np.ndarray, mask: np.ndarray) -> float:
    """Typical object radius in px from the distance to the background inside ``mask``.

    Inside a disk of radius R the mean distance to the edge is R / 3; unlike component areas,
    this is not inflated by clusters of touching objects.
    """
    return 3.0 * float(distance[mask].mean()) if mask.any() else 0.0


def _seeds_2class(mask: np.ndarray, min_distance: Optional[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds from maxima of the smoothed distance transform: (markers, flood surface, distance).

    Euclidean distance to the background, smoothed by a ``SEED_SIGMA`` Gaussian and zero outside
    the mask. The exact metric and the smoothing matter for seeds that do not move with the
    pixel grid: with the octagonal chamfer distance (5x faster) and no smoothing, a 1-px change
    of an outline adds or removes maxima along the ridge of an elongated nucleus. Segmenting the
    29 held-out BBBC039 images and the same images moved by (37, 91) px left 111 of 2,968 nuclei
    unmatched between the two (F1 0.981); with this map and :func:`merge_shallow_basins`, 30 of
    2,855 (F1 0.9948), and F1 against the manual masks rose from 0.906 to 0.923
    (benchmarks/seams.py, docs/network.md).
    """
    distance = ndi.distance_transform_edt(mask).astype(np.float32)
    if SEED_SIGMA > 0:
        distance = ndi.gaussian_filter(distance, SEED_SIGMA, output=np.float32)
        distance *= mask
    if min_distance is None:
        min_distance = max(2, int(round(0.6 * typical_radius(distance, mask))))
    markers = _distance_peaks(distance, mask, int(min_distance))
    # the flood surface in 1/64-px levels (uint16, up to 1023 px from the edge): coarser levels
    # (uint8 half-px) leave tied plateaus whose flooding order depends on the band of
    # watershed_bands; with these, bands and whole image agree pixel for pixel, at the same speed
    surface = (65535.0 - np.minimum(np.rint(64.0 * distance), 65535.0)).astype(np.uint16)
    return markers, surface, distance


def _seed_unseeded(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every connected component of ``mask`` without a marker one marker (its own label)."""
    components, n = ndi.label(mask)
    if n == 0:
        return markers
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[components[markers > 0]] = True
    seeded[0] = True
    if seeded.all():
        return markers
    lut = np.zeros(n + 1, dtype=np.int64)
    missing = ~seeded
    lut[missing] = markers.max() + np.arange(1, int(missing.sum()) + 1)
    extra = lut[components]
    return np.where(extra > 0, extra, markers).astype(np.int32)


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
    peak = np.full(n + 1, -np.inf)
    inside = labels.ravel() > 0
    np.maximum.at(peak, labels.ravel()[inside], height.ravel()[inside])  # 3.5x faster than ndi.maximum (a sort)
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


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def watershed_bands(surface: np.ndarray, markers: np.ndarray, mask: np.ndarray, threads: Optional[int] = None,
                    band: int = 256, margin: int = 64) -> np.ndarray:
    """``skimage.segmentation.watershed(surface, markers, mask=mask)`` in row bands, on several threads.

    Each band of ``band`` rows is flooded with ``margin`` extra rows above and below, and keeps
    its own rows; the flooding releases the GIL, so bands run in parallel (1.9x on 2 cores).
    Markers keep their global numbers, so an object cut by a band border gets the same label
    on both sides. A pixel's basin is decided by the seeds around it, so with a margin of
    several object radii the result is the whole-image watershed: on a 2048 x 2048 map of
    4,500 touching cells, and on BBBC039 nuclei, not one pixel differs (``tests/test_instances.py``).
    Pixels a band could not reach (an object with its only seed beyond the margin) are
    flooded again on the whole image. One thread, or an image of few bands: one plain call.
    """
    from concurrent.futures import ThreadPoolExecutor

    from skimage.segmentation import watershed

    height = mask.shape[0]
    threads = threads or min(4, available_cpus())
    if threads < 2 or height < 3 * band:
        return watershed(surface, markers, mask=mask)

    def flood(y0: int) -> tuple[int, np.ndarray]:
        y1 = min(y0 + band, height)
        e0, e1 = max(0, y0 - margin), min(height, y1 + margin)
        return y0, watershed(surface[e0:e1], markers[e0:e1], mask=mask[e0:e1])[y0 - e0 : y1 - e0]

    labels = np.empty(mask.shape, np.int32)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for y0, core in pool.map(flood, range(0, height, band)):
            labels[y0 : y0 + core.shape[0]] = core
    if (mask & (labels == 0)).any():
        return watershed(surface, markers, mask=mask)
    return labels


def probability_to_labels(
    prob: np.ndarray,
    threshold: float = 0.5,
    min_size: Optional[int] = None,
    dilation: int = 3,
    min_distance: Optional[int] = None,
    min_depth: Optional[float] = None,
) -> np.ndarray:
    """Turn a class-probability map into instance labels.

    Parameters
    ----------
    prob : ndarray, shape (K, Y, X)
        Class probabilities: K = 2 (background, foreground) or K = 3 (background, interior,
        boundary).
    threshold : float
        Foreground is ``1 - prob[0] > threshold``; 3-class seeds are ``prob[1] > threshold``.
    min_size : int, optional
        Objects with fewer pixels (before dilation) are removed. Default: 10 % of the median
        object area (at least 4 px).
    dilation : int
        Odd side of the square each object grows by afterwards (METHOD 5.4: 9 cells, 3 nuclei).
    min_distance : int, optional
        2-class seeds: smallest distance between two seeds in px. Default: 0.6 x the median
        object radius (estimated as 3 x the mean distance-to-background inside the mask).
    min_depth : float, optional
        2-class: two touching basins stay apart only where the distance to the background
        dips by at least this many px between their centres (:func:`merge_shallow_basins`);
        0 keeps every basin. Default ``MIN_DEPTH`` (0.5 px): a shallower dip is within the
        pixel noise of an outline.

    Returns
    -------
    ndarray of uint16 (uint32 beyond 65535 objects), shape (Y, X)
        0 = background, objects numbered 1..n.

    Examples
    --------
    >>> prob = np.zeros((2, 40, 40), np.float32); prob[0] = 1
    >>> prob[:, 10:20, 10:20] = [[[0.0]], [[1.0]]]
    >>> int(probability_to_labels(prob, dilation=1).max())
    1
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 3 or prob.shape[0] not in (2, 3):
        raise ValueError(f"prob must be (2 or 3, Y, X), got shape {prob.shape}")
    mask = (1.0 - prob[0]) > threshold
    if not mask.any():
        return np.zeros(prob.shape[1:], dtype=np.uint16)
    if prob.shape[0] == 3:
        markers, _ = ndi.label(prob[1] > threshold)
        surface = _flood_surface(prob[1])
    else:
        markers, surface, distance = _seeds_2class(mask, min_distance)
    markers = _seed_unseeded(markers, mask)
    # bands overlap by several object radii (2 area / perimeter is the radius of a disk; the
    # count of mask/background pixel edges overestimates the perimeter by up to 4 / pi)
    edges = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    margin = max(64, int(10 * np.count_nonzero(mask) / max(edges, 1)))
    labels = watershed_bands(surface, markers, mask, margin=margin)
    if prob.shape[0] == 2:
        labels = merge_shallow_basins(labels, distance, MIN_DEPTH if min_depth is None else float(min_depth))
    if min_size is None:
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
        min_size = max(4, int(0.1 * np.median(areas))) if areas.size else 4
    labels, _ = _relabel_sizes(labels, int(min_size))
    return dilate_labels(labels, dilation)


def labels_blockwise(
    prob,
    out,
    band: int = 1024,
    margin: int = 128,
    threshold: float = 0.5,
    dilation: int = 3,
    min_size: Optional[int] = None,
    min_distance: Optional[int] = None,
    min_depth: Optional[float] = None,
) -> int:
    """Instance labels of a (K, Y, X) probability map too large for memory, in row bands.

    Each band ``[y0, y1)`` is labelled by :func:`probability_to_labels` with ``margin`` extra
    rows above and below. An object is kept by the band whose core holds its top row, unless
    it touches the extended band's cut edge: every object shorter than ``margin`` is therefore
    labelled whole, by exactly one band. Kept objects are written into ``out`` only on pixels
    that are still 0 (so a neighbour written by the previous band is never overwritten), with
    labels offset to stay unique.

    Parameters
    ----------
    prob : array, shape (K, Y, X)
        Probabilities (numpy or zarr; only ``band + 2 * margin`` rows are read at a time).
    out : array, shape (Y, X)
        Zero-initialised integer output (e.g. a uint32 zarr), written band by band.
    band, margin : int
        Rows per band and overlap rows; ``margin`` must exceed the tallest object (after
        dilation).
    threshold, dilation, min_size, min_distance, min_depth
        As in :func:`probability_to_labels` (a default ``min_size`` is derived per band).

    Returns
    -------
    int
        Number of objects written (labels 1..n).
    """
    _, height, _ = prob.shape
    next_label = 0
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        e0, e1 = max(0, y0 - margin), min(height, y1 + margin)
        labels = probability_to_labels(np.asarray(prob[:, e0:e1], dtype=np.float32), threshold, min_size, dilation,
                                       min_distance, min_depth)
        n = int(labels.max())
        if n == 0:
            continue
        keep = np.zeros(n + 1, dtype=bool)
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None:
                continue
            cut = (box[0].start == 0 and e0 > 0) or (box[0].stop == e1 - e0 and e1 < height)
            keep[i] = y0 <= box[0].start + e0 < y1 and not cut
        lut = np.zeros(n + 1, dtype=np.int64)
        lut[keep] = next_label + np.arange(1, int(keep.sum()) + 1)
        next_label += int(keep.sum())
        new = lut[labels]
        current = np.asarray(out[e0:e1])
        write = (current == 0) & (new > 0)
        if write.any():
            current = current.copy()
            current[write] = new[write]
            out[e0:e1] = current
    return next_label
