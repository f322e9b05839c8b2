"""What :meth:`stainseg.Model.run` does: raw planes to labels, probabilities, uncertainty, timings and quality flags.

:func:`run_settings` checks the settings of one call (the model's, with overrides);
:func:`run_model` checks the image beside its preparation, runs the network and makes the
instances (and, for a model of cells grown from nuclei, the cells); :func:`empty_result` is the
result of an image that is not run through the network (a blank image, or one skipped for its
flags). :meth:`stainseg.Model.run` and :meth:`stainseg.Model.empty_result` delegate here.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from stainseg.config import SegmentConfig
from stainseg.errors import StainsegError
from stainseg.model_input import is_constant
from stainseg.preprocess import prepare

__all__ = ["run_model", "empty_result", "run_settings", "probability_of", "SEGMENT_OVERRIDES"]

SEGMENT_OVERRIDES = ("tiling", "tile_size", "two_pass", "batch_size", "threshold", "min_size", "min_distance", "min_depth", "dilation", "smoothing")
"""The settings one call of :meth:`stainseg.Model.run` (or ``segment``) may override."""


def run_settings(settings: SegmentConfig, overrides: Mapping[str, Any]) -> SegmentConfig:
    """A copy of ``settings`` with ``overrides`` (None keeps a value), checked; one-line error for a bad one.

    Examples
    --------
    >>> run_settings(SegmentConfig(), {"tiling": "tiles", "threshold": None}).tiling
    'tiles'
    >>> run_settings(SegmentConfig(), {"tiles": 3})
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: unknown segmentation setting 'tiles'; use one of tiling, tile_size, two_pass, batch_size, threshold, min_size, min_distance, min_depth, dilation, smoothing
    """
    unknown = sorted(set(overrides) - set(SEGMENT_OVERRIDES))
    if unknown:
        raise StainsegError(f"unknown segmentation setting {unknown[0]!r}; use one of {', '.join(SEGMENT_OVERRIDES)}")
    s = copy.deepcopy(settings)
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    if s.tiling not in ("overlap", "tiles"):
        raise StainsegError(f"tiling {s.tiling!r} must be \"overlap\" or \"tiles\"")
    if s.tile_size < 16:
        raise StainsegError(f"tile size {s.tile_size} is too small; use at least 16 (the model's is {settings.tile_size})")
    if not 0.0 < float(s.threshold) < 1.0:
        raise StainsegError(f"threshold {s.threshold} must lie between 0 and 1")
    return s


def probability_of(model: Any, raw: Any, **overrides: Any) -> np.ndarray:
    """Class probabilities (K, Y, X) of raw planes at their own size (:meth:`stainseg.Model.predict_probability`).

    Examples
    --------
    >>> from stainseg.model import Model
    >>> probability_of(Model.new(["DNA"]), np.ones((32, 40))).shape
    (2, 32, 40)
    """
    stack = model.arrange(raw)
    prob = model.predict_prepared(prepare(stack, model.preprocessing), **overrides)[0]
    if model.preprocessing.downsample > 1:  # a model that works at 1 / f: back to the input's size
        from stainseg.scale import upsample_linear

        prob = upsample_linear(prob, model.preprocessing.downsample, stack.shape)
    return prob


def empty_result(model: Any, stack: np.ndarray, flags: list[Any], two_pass: Optional[bool] = None) -> dict[str, Any]:
    """What :meth:`stainseg.Model.run` returns for an image that is not run through the network: no cells, background everywhere.

    Parameters
    ----------
    model : Model
        Gives the number of classes, the default ``two_pass`` and whether cells are grown from nuclei.
    stack : ndarray, shape (C, Y, X)
        The arranged raw planes.
    flags : list of Flag
        The image's quality flags, returned as they are.
    two_pass : bool, optional
        Whether an (all-zero) uncertainty map belongs to the result (default: the model's setting).

    Returns
    -------
    dict
        As :meth:`stainseg.Model.run`: zero ``labels``, ``probability`` 1 for the background, zero timings.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> result = empty_result(Model.new(["DNA"]), np.zeros((1, 8, 9), np.float32), [])
    >>> int(result["labels"].max()), result["probability"].shape, float(result["probability"][0].min())
    (0, (2, 8, 9), 1.0)
    """
    shape = tuple(stack.shape[1:])
    prob = np.zeros((model.n_classes,) + shape, np.float32)
    prob[0] = 1.0
    two_pass = model.segment_settings.two_pass if two_pass is None else two_pass
    result = {"labels": np.zeros(shape, np.uint16), "probability": prob, "stack": stack, "flags": flags,
              "uncertainty": np.zeros(shape, np.float32) if two_pass else None,
              "timings": {"check_s": 0.0, "preprocess_s": 0.0, "inference_s": 0.0, "postprocess_s": 0.0}}
    if model.cell_extent is not None:
        result["nuclei"] = np.zeros(shape, np.uint16)
    return result


def run_model(model: Any, raw: Any, where: str | Path | None = None, progress: Optional[Callable[[int], None]] = None,
              check: bool = True, flags: Optional[list[Any]] = None, **overrides: Any) -> dict[str, Any]:
    """Segment raw planes with ``model`` and return everything: ``labels``, ``probability``, ``uncertainty``, ``timings``, ``flags``.

    A model that works at a reduced scale (``model.preprocessing.downsample``) finds its objects there
    and draws their outlines at the input's size (:mod:`stainseg.segment.upscale`); its probabilities
    and uncertainty are interpolated back bilinearly (:func:`stainseg.scale.upsample_linear`).

    A model of cells grown from nuclei (``model.cell_extent``) segments the nuclei with the network
    (returned as ``nuclei``; ``probability`` is theirs), then grows each into its cell over the
    label-free planes by the recipe of the automatic cell labels (``labels``: cell ``k`` holds
    nucleus ``k``); the object checks compare those cells with the training cells.

    Parameters
    ----------
    model : Model
        The trained model (its preprocessing, settings, engine and quality reference).
    raw : ndarray or sequence of ndarray
        The model's input planes (see :func:`stainseg.model_input.arrange_channels`).
    where : str or Path, optional
        The file the planes came from, named in errors.
    progress : callable, optional
        Called with the number of tiles done.
    check : bool
        Compare the image and the objects with the training data (:meth:`stainseg.Model.check`).
    flags : list of Flag, optional
        The image's flags when :meth:`stainseg.Model.check` already made them (the image checks are
        then not run again). A blank image (constant, or camera noise only) has no cells by
        definition: it gives zero cells and the ``blank`` flag without running the network.
    **overrides
        Segmentation settings for this call (see :meth:`stainseg.Model.segment`).

    Returns
    -------
    dict
        ``labels`` (Y, X), ``probability`` (K, Y, X), ``uncertainty`` (Y, X) or None, ``stack`` (the
        arranged planes), ``flags``, ``timings`` (``check_s``, ``preprocess_s``, ``inference_s``,
        ``postprocess_s``) and, for cells grown from nuclei, ``nuclei``.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> result = run_model(Model.new(["DNA"]), np.zeros((32, 40)))
    >>> result["labels"].shape, [f.code for f in result["flags"]]
    ((32, 40), ['blank'])
    """
    from stainseg.quality import FLAG_MEANINGS, Flag, is_blank
    from stainseg.segment.upscale import instance_labels

    settings = run_settings(model.segment_settings, overrides)
    stack = model.arrange(raw, where)
    t0 = time.perf_counter()
    constant = is_constant(stack)
    if flags is None and check:
        # the checks (numpy, mostly single-threaded) run on a thread beside the pre-processing, so the
        # second core does them while the first prepares the image; a blank image wastes that preparation
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(model.check, stack)
            x = None if constant else prepare(stack, model.preprocessing)
            t1 = time.perf_counter()
            flags = pending.result()
        t_check = time.perf_counter() - t1
    else:
        flags, t_check = list(flags or []), 0.0
        x, t1 = None, t0
    flagged_blank = any(f.code == "blank" for f in flags)
    if constant or (flagged_blank and is_blank(stack)):
        if not flagged_blank:
            flags.insert(0, Flag("blank", f"blank: {FLAG_MEANINGS['blank']}"))
        result = model.empty_result(stack, flags, settings.two_pass and settings.tiling == "tiles")
        result["timings"]["check_s"] = t_check
        return result
    if x is None:
        x = prepare(stack, model.preprocessing)
        t1 = time.perf_counter()
    prob, unc = model.predict_prepared(x, uncertainty=True, progress=progress, **overrides)
    del x
    t2 = time.perf_counter()
    factor = model.preprocessing.downsample
    labels = instance_labels(prob, model.instance_options(**overrides), factor, stack.shape)
    if factor > 1:  # a model that works at 1 / f: its objects were drawn, its maps are interpolated at the input's size
        from stainseg.scale import upsample_linear

        prob = upsample_linear(prob, factor, stack.shape)
        unc = None if unc is None else upsample_linear(unc, factor, stack.shape)
    nuclei = None
    if model.cell_extent is not None:
        nuclei = labels
        labels = model.cell_extent.cells(stack, nuclei).astype(nuclei.dtype, copy=False)
    if check and model.reference and model.reference.get("objects"):
        from stainseg.quality import check_objects

        flags += check_objects(labels, model.reference)
    t3 = time.perf_counter()
    result = {"labels": labels, "probability": prob, "uncertainty": unc, "stack": stack, "flags": flags,
              "timings": {"check_s": t_check, "preprocess_s": t1 - t0, "inference_s": t2 - t1, "postprocess_s": t3 - t2}}
    if nuclei is not None:
        result["nuclei"] = nuclei
    return result
