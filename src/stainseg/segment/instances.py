"""From a probability map to labelled objects: seeds, watershed, size filter, dilation (METHOD.md 5.3-5.4).

- Optional smoothing: the foreground probability is blurred by a Gaussian of ``smoothing`` px
  first (an under-trained network on phase contrast flickers at pixel scale; blurring at a
  fraction of the object radius joins a nucleus into one blob and removes flecks).
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
from stainseg.segment.seeds import MIN_DEPTH, distance_seeds, mask_components, merge_shallow_basins, seed_unseeded


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
    for step in range(reach):
        grown = ndi.grey_dilation(out, footprint=footprint)
        background = out == 0
        if step < reach - 1 and not (background & (grown > 0)).any():
            break  # nothing left to grow (the last step needs no check: it would change nothing)
        np.copyto(out, grown, where=background)
    return out


def _relabel_sizes(labels: np.ndarray, min_size: int, sizes: Optional[np.ndarray] = None) -> tuple[np.ndarray, int]:
    """Drop objects smaller than ``min_size`` and relabel 1..n in one pass (bincount + lookup).

    ``sizes``: ``np.bincount(labels.ravel())``, when the caller has it already.
    """
    if sizes is None:
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


def smooth_probability(prob: np.ndarray, sigma: float) -> np.ndarray:
    """A (K, Y, X) map with its foreground smoothed by a Gaussian of ``sigma`` px (K = 2; 0 = unchanged).

    An under-trained network on phase contrast draws nuclei as pixel-scale flickering blobs
    (thousands of 1-3 px components above 0.5); smoothing at a fraction of the nucleus radius
    before the threshold joins them into one object and removes isolated flecks. Only the
    2-class map is smoothed (the background channel becomes ``1 - foreground``).

    Examples
    --------
    >>> p = np.zeros((2, 9, 9), np.float32); p[0] = 1; p[:, 4, 4] = [0.0, 1.0]
    >>> q = smooth_probability(p, 1.0)
    >>> bool(q[1, 4, 4] < 0.5), bool(np.allclose(q.sum(0), 1))
    (True, True)
    """

    prob = np.asarray(prob, np.float32)
    if not sigma or sigma <= 0:
        return prob
    if prob.shape[0] != 2:
        raise ValueError(f"smoothing needs a 2-class (background, foreground) map, got {prob.shape[0]} classes")
    fg = ndi.gaussian_filter(prob[1], float(sigma), output=np.float32)
    return np.stack([1.0 - fg, fg])


def probability_to_labels(
    prob: np.ndarray,
    threshold: float = 0.5,
    min_size: Optional[int] = None,
    dilation: int = 3,
    min_distance: Optional[int] = None,
    min_depth: Optional[float] = None,
    smoothing: Optional[float] = None,
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
    smoothing : float, optional
        2-class: Gaussian sigma in px of a blur of the foreground probability before the
        threshold (:func:`smooth_probability`); None or 0: none.
        Training chooses it (``[segment] smoothing``).

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
    if smoothing and prob.shape[0] == 2:

        prob = smooth_probability(prob, float(smoothing))
    mask = (1.0 - prob[0]) > threshold
    if not mask.any():
        return np.zeros(prob.shape[1:], dtype=np.uint16)
    components = mask_components(mask)  # one labelling for the distance map and the unseeded check
    if prob.shape[0] == 3:
        markers, _ = ndi.label(prob[1] > threshold)
        surface = _flood_surface(prob[1])
    else:
        markers, surface, distance = distance_seeds(mask, min_distance, components)
    markers = seed_unseeded(markers, mask, components)
    # bands overlap by several object radii (2 area / perimeter is the radius of a disk; the
    # count of mask/background pixel edges overestimates the perimeter by up to 4 / pi)
    edges = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    margin = max(64, int(10 * np.count_nonzero(mask) / max(edges, 1)))
    labels = watershed_bands(surface, markers, mask, margin=margin)
    if prob.shape[0] == 2:
        labels = merge_shallow_basins(labels, distance, MIN_DEPTH if min_depth is None else float(min_depth))
    sizes = np.bincount(labels.ravel())  # one count for the default min_size and the size filter
    if min_size is None:
        areas = sizes[1:][sizes[1:] > 0]
        min_size = max(4, int(0.1 * np.median(areas))) if areas.size else 4
    labels, _ = _relabel_sizes(labels, int(min_size), sizes)
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
    smoothing: Optional[float] = None,
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
    threshold, dilation, min_size, min_distance, min_depth, smoothing
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
                                       min_distance, min_depth, smoothing)
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
