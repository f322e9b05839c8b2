"""What a :class:`stainseg.Model` learns from its training data besides the weights (in memory; nothing is written).

:func:`fit_training_statistics` (:meth:`stainseg.Model.fit_statistics`) records the intensity
statistics for normalisation, the flat field and the quality reference of the training images;
:func:`calibrate_model` (:meth:`stainseg.Model.calibrate`) derives the instance settings from the
training labels and calibrates them on images: threshold, sizes, seed spacing, dilation and
smoothing, by the search of :func:`stainseg.segment.derive.calibrate`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError
from stainseg.preprocess import channel_statistics, correct_plane

__all__ = ["fit_training_statistics", "training_flat_field", "calibrate_model"]


def fit_training_statistics(model: Any, raws: Sequence[np.ndarray], labels: Optional[Sequence[np.ndarray]] = None) -> None:
    """Record the statistics of the training images in ``model``.

    Parameters
    ----------
    model : Model
        Gets ``preprocessing.statistics`` (intensities after illumination correction, for
        normalisation), ``preprocessing.flat_field`` (:func:`training_flat_field`) and ``reference``
        (:func:`stainseg.quality.reference_statistics`: intensity, sharpness, texture and, with
        ``labels``, object counts and sizes).
    raws : sequence of ndarray
        The raw training planes (each as :meth:`stainseg.Model.arrange` takes them).
    labels : sequence of ndarray, optional
        Their instance labels.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> model = Model.new(["DNA"])
    >>> fit_training_statistics(model, [np.random.default_rng(s).gamma(2.0, 50.0, (64, 64)) for s in range(2)])
    >>> model.preprocessing.statistics is not None, model.reference is not None
    (True, True)
    """
    from stainseg.quality import reference_statistics

    stacks = [model.arrange(raw) for raw in raws]
    model.reference = reference_statistics(stacks, None if labels is None else [np.asarray(lab) for lab in labels])
    corrected = []
    for raw in raws:
        stack = model.arrange(raw)
        corrected.append(np.stack([correct_plane(plane, model.preprocessing) for plane in stack]))
    model.preprocessing.statistics = channel_statistics(corrected, model.preprocessing.low, model.preprocessing.high)
    model.preprocessing.flat_field = training_flat_field(stacks, model.preprocessing)


def training_flat_field(stacks: Sequence[np.ndarray], preprocessing: Any) -> Optional[np.ndarray]:
    """Per-plane flat fields of the training stacks (:func:`stainseg.groundtruth.illumination.flat_field`), or None
    when they differ in size or ``preprocessing`` does not correct illumination.

    Examples
    --------
    >>> from stainseg.preprocess import Preprocessing
    >>> training_flat_field([np.ones((1, 8, 8))], Preprocessing(illumination="none")) is None
    True
    """
    if preprocessing.illumination != "spline" or not stacks or len({s.shape for s in stacks}) != 1:
        return None
    from stainseg.groundtruth.illumination import flat_field

    p = preprocessing
    return np.stack([flat_field([s[c] for s in stacks], p.spline_grid, p.spline_iterations) for c in range(stacks[0].shape[0])])


def _at_working_scale(labels: np.ndarray, shape: tuple[int, ...], factor: int) -> np.ndarray:
    """Calibration labels at the network's working scale: full-size labels of a downsampling model are reduced."""
    if labels.shape == tuple(shape):
        return labels
    from stainseg.scale import downsample_labels, working_shape

    if factor > 1 and working_shape(labels.shape, factor) == tuple(shape):
        return downsample_labels(labels, factor)
    raise StainsegError(f"calibration labels of shape {labels.shape} do not match their image ({tuple(shape)} at the working scale); "
                        "give one label image per image, of the same size")


def calibrate_model(model: Any, images: Sequence[Any], labels: Sequence[np.ndarray], prepared: bool = False,
                    dilation: bool = True, statistics: Optional[dict[str, Any]] = None,
                    foreground_factor: Optional[float] = None, smoothing: bool = True) -> dict[str, Any]:
    """Derive the instance settings of ``model`` from ``labels`` and calibrate them on ``images`` (in memory; nothing is written).

    The typical object size, smallest object and seed spacing come from the labels
    (:mod:`stainseg.segment.derive`; from ``statistics`` of all training labels when given),
    the starting threshold from the loss's foreground weight (``f / (1 + f)``); threshold,
    dilation, the smallest-size factor and the smoothing are then chosen by the pooled score
    of segmenting ``images`` against ``labels``. With fewer than
    :data:`stainseg.segment.derive.MIN_CALIBRATION_OBJECTS` objects the derived threshold is kept.

    Parameters
    ----------
    model : Model
        Its ``segment_settings`` get the chosen values, ``derived`` the label statistics and the
        derived settings, ``info["calibration"]`` the record.
    images : sequence
        Raw planes (or prepared network inputs when ``prepared``), e.g. the validation crops.
    labels : sequence of ndarray
        Their automatic instance labels of the network's objects (``model.network_objects``: the nuclei
        for a model of cells grown from nuclei), at the images' full size or at the working scale.
    prepared : bool
        ``images`` are network inputs already (:meth:`stainseg.Model.prepare`).
    dilation : bool
        Calibrate the dilation too (False keeps a dilation set in the config).
    statistics : dict, optional
        :func:`stainseg.segment.derive.object_statistics` of all the training labels (default: of ``labels``).
    foreground_factor : float, optional
        The loss's extra foreground weight the network was trained with (default: ``info["foreground_factor"]``).
    smoothing : bool
        Also search a Gaussian smoothing of the map (fractions of the typical radius).

    Returns
    -------
    dict
        The calibration record (also kept in ``model.info["calibration"]``).

    Examples
    --------
    >>> from stainseg.model import Model
    >>> calibrate_model(Model.new(["DNA"]), [np.ones((32, 32))], [np.zeros((32, 32), np.uint16)])
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: the calibration labels hold no objects; give images with objects in them
    """
    from stainseg.segment.derive import SMOOTHING_FACTORS, calibrate, derived_settings, object_statistics

    empty = StainsegError("the calibration labels hold no objects; give images with objects in them")
    if not any(np.asarray(lab).any() for lab in labels):
        raise empty  # before any inference
    probs = [model.predict_prepared(np.asarray(im, np.float32) if prepared else model.prepare(im))[0] for im in images]
    labels = [_at_working_scale(np.asarray(lab), prob.shape[1:], model.preprocessing.downsample) for lab, prob in zip(labels, probs)]
    stats = statistics or object_statistics(labels)
    if not stats.get("objects") or not any(lab.any() for lab in labels):
        raise empty
    if foreground_factor is None and isinstance(model.info.get("foreground_factor"), (int, float)):
        foreground_factor = float(model.info["foreground_factor"])
    base = derived_settings(stats, foreground_factor)
    grid: dict[str, Any] = {} if dilation else {"dilation": (model.dilation,)}
    if smoothing and model.n_classes == 2:
        grid["smoothing_factor"] = SMOOTHING_FACTORS
    record = calibrate(probs, labels, base, grid or None)
    chosen = record["settings"]
    s = model.segment_settings
    s.threshold, s.min_size = float(chosen["threshold"]), int(chosen["min_size"])
    s.min_distance, s.min_depth = chosen.get("min_distance"), chosen.get("min_depth")
    s.dilation = int(chosen["dilation"])
    s.smoothing = float(chosen["smoothing"]) if chosen.get("smoothing") else None
    model.derived = {"objects": stats, "derived": base}
    summary = {"images": len(labels), "objects": record["objects"], "threshold_fixed": record["threshold_fixed"],
               "kept_derived": record["kept_derived"], "settings": chosen, "score": record["score"], "seconds": record["seconds"],
               "paper_dilation": 9 if model.network_objects == "cells" else 3}
    model.info["calibration"] = summary
    return summary
