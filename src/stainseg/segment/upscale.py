"""Objects found at the working scale, drawn at the input's resolution (a model with ``downsample = f > 1``).

The seeds, watershed and size filter run at ``1 / f`` (:mod:`stainseg.scale`), where they cost about
``1 / f**2``. Repeating those labels over ``f x f`` blocks would give every outline ``f``-px steps, and
an outline that moves by whole blocks when the image moves by less. :func:`refine_labels` instead
draws each object at full resolution:

1. the foreground probability is interpolated bilinearly between block centres
   (:func:`stainseg.scale.upsample_linear`) and thresholded with the model's threshold: the
   full-resolution mask;
2. each mask pixel takes the label of its block; a mask pixel whose block had no object takes
   the object of a neighbouring block (the largest label among the 8 neighbours, as the dilation
   decides ties); labelled pixels outside the mask become background;
3. the dilation (``d`` at the working scale: a reach of ``(d - 1) / 2`` working px) is applied at
   full resolution with the same reach, ``(d - 1) / 2 * f`` px.

Which objects exist and where they touch is decided at the working scale; only their outlines are
redrawn. An object whose every pixel falls outside the mask (a thread one block wide at a high
threshold) is removed, and the labels are numbered 1..n again.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from stainseg.scale import upsample, upsample_linear
from stainseg.segment.instances import _relabel_sizes, dilate_labels, probability_to_labels, smooth_probability

__all__ = ["instance_labels", "foreground_of", "refine_labels", "full_dilation", "refine_halo"]


def foreground_of(prob: np.ndarray, smoothing: Optional[float] = None) -> np.ndarray:
    """The foreground probability the instance step thresholds: ``1 - prob[0]``, after the model's smoothing (2-class).

    Examples
    --------
    >>> p = np.zeros((2, 3, 3), np.float32); p[0] = 0.25; p[1] = 0.75
    >>> float(foreground_of(p)[1, 1])
    0.75
    """
    prob = np.asarray(prob, np.float32)
    if smoothing and prob.shape[0] == 2:
        return smooth_probability(prob, float(smoothing))[1]
    return 1.0 - prob[0]


def full_dilation(dilation: int, factor: int) -> int:
    """The full-resolution square side with the reach of a ``dilation`` square at ``1 / factor``.

    Examples
    --------
    >>> full_dilation(3, 2), full_dilation(1, 2), full_dilation(9, 3)
    (5, 1, 25)
    """
    return (int(dilation) - 1) * int(factor) + 1


def refine_halo(dilation: int, smoothing: Optional[float] = None) -> int:
    """Working-scale rows beyond a band that :func:`refine_labels` reads to draw the band exactly as on the whole image.

    One row for the interpolation and one for the growth into the mask, the dilation's reach, and
    the Gaussian's radius when the foreground is smoothed first.

    Examples
    --------
    >>> refine_halo(3), refine_halo(1, smoothing=1.5)
    (4, 10)
    """
    halo = 3 + (int(dilation) - 1) // 2
    if smoothing:
        halo += int(4.0 * float(smoothing) + 0.5) + 1
    return halo


def refine_labels(labels: np.ndarray, foreground: np.ndarray, factor: int, shape: tuple[int, ...], threshold: float,
                  dilation: int = 1, relabel: bool = True) -> np.ndarray:
    """Working-scale ``labels`` (before dilation) drawn at the input's ``shape`` along the interpolated ``foreground``.

    Parameters
    ----------
    labels : ndarray of int, shape (y, x)
        Instance labels at ``1 / factor``, not dilated.
    foreground : ndarray of float, shape (y, x)
        The foreground probability they were found on (:func:`foreground_of`).
    factor : int
        The working scale's factor ``f``.
    shape : tuple
        The input's (Y, X) (last two axes used).
    threshold : float
        The model's foreground threshold.
    dilation : int
        The model's dilation at the working scale (odd); applied at full resolution with the same reach.
    relabel : bool
        Number the objects 1..n again when one vanished (False: keep the numbers, e.g. for one band
        of a larger image).

    Returns
    -------
    ndarray, shape (Y, X)
        Labels of the dtype of ``labels``.

    Examples
    --------
    >>> fg = np.zeros((4, 4), np.float32); fg[1:3, 1:3] = 1.0; fg[0, 1:3] = 0.4
    >>> lab = (fg > 0.5).astype(np.uint16)
    >>> refine_labels(lab, fg, 2, (8, 8), 0.5)[:, 3].tolist()  # repeated blocks: rows 2-5; above, fg is 0.55 at row 1
    [0, 1, 1, 1, 1, 1, 0, 0]
    """
    factor = int(factor)
    height, width = int(shape[-2]), int(shape[-1])
    if factor == 1:
        return dilate_labels(labels, dilation)
    mask = upsample_linear(foreground, factor, (height, width)) > threshold
    # each block offers its object, or the object of a neighbouring block (one working px of growth,
    # ties to the larger label: what dilate_labels does); the mask decides which pixels take it
    offered = upsample(dilate_labels(labels, 3), factor, (height, width))
    out = np.where(mask, offered, 0).astype(labels.dtype, copy=False)
    if relabel and labels.size:
        sizes = np.bincount(out.ravel(), minlength=int(labels.max()) + 1)
        if not sizes[1:].all():  # an object vanished: number 1..n again
            out, _ = _relabel_sizes(out, 1, sizes)
    return dilate_labels(out, full_dilation(dilation, factor))


def instance_labels(prob: np.ndarray, options: dict, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Instance labels at the input's ``shape`` from a (K, y, x) probability map at ``1 / factor``.

    ``options``: the keyword arguments of :func:`stainseg.segment.instances.probability_to_labels`
    (:meth:`stainseg.Model.instance_options`), in working-scale px. Factor 1 is that function itself.

    Examples
    --------
    >>> prob = np.zeros((2, 20, 20), np.float32); prob[0] = 1; prob[:, 5:12, 6:13] = [[[0.0]], [[1.0]]]
    >>> options = {"threshold": 0.5, "min_size": 4, "min_distance": None, "min_depth": None, "smoothing": None, "dilation": 1}
    >>> labels = instance_labels(prob, options, 2, (40, 39))
    >>> labels.shape, int(labels.max()), int((labels > 0).sum())
    ((40, 39), 1, 196)
    """
    if int(factor) == 1:
        return probability_to_labels(prob, **options)
    if options.get("smoothing") and prob.shape[0] == 2:  # smoothed once, for the objects and their outlines
        prob = smooth_probability(prob, float(options["smoothing"]))
        options = {**options, "smoothing": None}
    labels = probability_to_labels(prob, **{**options, "dilation": 1})
    return refine_labels(labels, foreground_of(prob), factor, shape, float(options["threshold"]), int(options.get("dilation") or 1))
