"""From raw training images and their labels to a saved, calibrated :class:`stainseg.Model`.

The steps, each its own function: the model's preprocessing learns the intensity statistics of
the raw images, every image is prepared by :meth:`Model.prepare` (so training and segmentation
share one preprocessing by construction), the loop trains the network, the settings of the
instance step are derived from the labels and calibrated on the validation crops, and the folder
is written once. With ``[preprocess] downsample`` (or ``"auto"``) all of that happens at the working
scale (:mod:`stainseg.scale`): the images are reduced by :meth:`Model.prepare` and the labels here.

Cells grown from nuclei (``cell_method = "nuclei"``, the default for ``objects = "cells"`` without a
cytoplasm stain) train exactly as a nuclei model: the nuclei labels are the targets and calibrate the
instance step; the model then records the cell extent recipe of the automatic cell labels
(:meth:`stainseg.groundtruth.extent.CellExtent.for_groundtruth`) and the quality reference of the
cell labels, which are what it outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import copy

import numpy as np

from stainseg.config import ExperimentConfig
from stainseg.errors import StainsegError
from stainseg.model import Model
from stainseg.scale import downsample_labels, working_downsample

__all__ = ["fit_model", "validation_pairs", "working_factor"]


def validation_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], info: dict[str, Any]
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The prepared images and labels the loop held out for validation (strips or whole images; all if none)."""
    strips = {int(i): int(c) for i, c in (info.get("validation_strips") or {}).items()}
    if strips:
        return [images[i][:, :, c:] for i, c in strips.items()], [labels[i][:, c:] for i, c in strips.items()]
    held = info.get("validation_indices") or list(range(len(images)))
    return [images[i] for i in held], [labels[i] for i in held]


def working_factor(setting: int | str, labels: Sequence[np.ndarray], info: dict[str, Any]) -> int:
    """The working scale of a training (``[preprocess] downsample``): the setting, or for ``"auto"`` the factor the
    median diameter of ``labels`` allows (:func:`stainseg.scale.working_downsample`); the reason goes to ``info``."""
    if setting != "auto":
        info["downsample"] = {"factor": int(setting), "from": "setting"}
        return int(setting)
    from stainseg.segment.derive import object_statistics

    diameter = object_statistics(list(labels)).get("diameter")
    factor = working_downsample(diameter)
    info["downsample"] = {"factor": factor, "from": "auto", "diameter": None if diameter is None else round(float(diameter), 2)}
    return factor


def fit_model(raws: Sequence[Any], labels: Sequence[np.ndarray], cfg: ExperimentConfig, out: str | Path,
              input_channels: Optional[Sequence[str]] = None, plane_names: Optional[Sequence[str]] = None, resume: bool = False, progress: bool = True,
              stop_after: Optional[int] = None, facts: Optional[dict[str, Any]] = None,
              calibrate: bool = True, nuclei: Optional[Sequence[np.ndarray]] = None) -> Optional[Model]:
    """Train a model on raw images and their automatic labels, calibrate it, save it to ``out``.

    Parameters
    ----------
    raws : sequence
        Raw input planes of each training image ((Y, X) or (C, Y, X), any dtype).
    labels : sequence of ndarray (Y, X)
        Instance labels of each image: the objects the model is to output.
    cfg : ExperimentConfig
        ``[train]``, ``[model]``, ``[preprocess]``, ``[segment]``, the illumination settings and
        ``objects`` / ``cell_method`` (:meth:`ExperimentConfig.cell_route`).
    out : str or Path
        The model folder (``checkpoint.pt`` while training).
    input_channels : sequence of str, optional
        The input channel names (default ``cfg.channels.input``, else ``channel0`` ...).
    plane_names : sequence of str, optional
        One name per input plane (e.g. ``BF[z=1]``); default: the channel names.
    resume, progress, stop_after
        As :func:`stainseg.train.loop.train`.
    facts : dict, optional
        More facts for ``model.json`` ``training`` (e.g. the image sets used).
    calibrate : bool
        Derive the instance settings from all training labels (sizes) and the loss's foreground
        weight (threshold), then calibrate them on the validation crops (a dilation set in
        ``[segment]`` is kept).
    nuclei : sequence of ndarray (Y, X), optional
        The nuclei labels of each image, required when ``cfg.cell_route()`` is ``"nuclei"`` (and only
        then): the network learns them, and ``labels`` (the cells) give the quality reference.

    Returns
    -------
    Model or None
        The saved model; None when ``stop_after`` stopped training or on a non-zero torchrun rank.
    """
    from stainseg.train.loop import train

    if len(raws) == 0:
        raise StainsegError("no training images; check the experiment's pattern and channels")
    first = np.asarray(raws[0])
    n_in = 1 if first.ndim == 2 else int(first.shape[0])
    names = list(input_channels or cfg.channels.input or [f"channel{i}" for i in range(n_in)])
    planes = list(plane_names) if plane_names is not None and len(plane_names) == n_in else None
    if planes is None and len(names) != n_in:
        planes = [f"in{i}" for i in range(n_in)]
    route = cfg.cell_route()
    targets = list(labels)
    net_cfg = cfg
    if route == "nuclei":
        if nuclei is None:
            raise StainsegError("objects = \"cells\" with cell_method \"nuclei\" trains on the nuclei labels; give them "
                                "(nuclei=, e.g. stainseg.automatic_labels(nuclei=stain)) or set cell_method = \"network\"")
        targets = [np.asarray(lab) for lab in nuclei]
        if len(targets) != len(labels) or any(n.shape != np.shape(c) for n, c in zip(targets, labels)):
            raise StainsegError(f"{len(targets)} nuclei label images for {len(labels)} cell label images; give one of the same "
                                "size per training image")
        net_cfg = copy.deepcopy(cfg)
        net_cfg.objects = "nuclei"  # the network is a nuclei network in every respect
    elif nuclei is not None:
        raise StainsegError(f"nuclei labels are used only for objects = \"cells\" with cell_method \"nuclei\" (this is "
                            f"objects = {cfg.objects!r}, cell_method {cfg.cell_method!r}); leave them out")
    if cfg.train.start_from:  # fine-tuning: the start model's architecture, this run's input planes
        from stainseg.train.start import start_weights

        net_cfg = copy.deepcopy(net_cfg)
        net_cfg.train.start_from = str(cfg.resolve_path(cfg.train.start_from))
        net_cfg.model.in_channels = n_in
        _, net_cfg.model = start_weights(net_cfg.train.start_from, net_cfg.model)
    model = Model.new(names, cfg=net_cfg, plane_names=planes)
    if route == "nuclei":
        from stainseg.groundtruth.extent import CellExtent

        model.objects = "cells"
        model.cell_extent = CellExtent.for_groundtruth(cfg.groundtruth)
        model.experiment = copy.deepcopy(cfg) if cfg.root else None
    model.fit_statistics(raws, labels)  # the quality reference: the objects the model outputs
    model.preprocessing.downsample = working_factor(cfg.preprocess.downsample, targets, model.info)
    images = [model.prepare(raw, f"training image {i}") for i, raw in enumerate(raws)]  # at the working scale
    if model.preprocessing.downsample > 1:  # the network learns, and is calibrated, at the working scale
        targets = [downsample_labels(np.asarray(t), model.preprocessing.downsample) for t in targets]
    result = train(images, targets, net_cfg, out, resume=resume, progress=progress, stop_after=stop_after)
    if result is None or result.info.get("rank", 0) != 0:
        return None
    model.network = result.network
    model.history = result.history
    model.info.update(result.info)
    model.info.update(facts or {})
    if net_cfg.train.start_from:
        model.info["start_from"] = net_cfg.train.start_from
    if route == "nuclei":
        model.info["cell_method"] = "nuclei"
    if calibrate:
        val_images, val_labels = validation_pairs(images, targets, result.info)
        if any(lab.any() for lab in val_labels):
            from stainseg.segment.derive import object_statistics

            factor = result.info.get("foreground_factor")
            record = model.calibrate(val_images, val_labels, prepared=True, dilation=cfg.segment.dilation is None,
                                     statistics=object_statistics(targets),
                                     foreground_factor=float(factor) if isinstance(factor, (int, float)) else None)
            if progress:
                s = record["settings"]
                print(f"calibrated on {record['images']} validation crops ({record['objects']} objects): threshold {s['threshold']}"
                      f"{' (derived; too few objects to calibrate it)' if record['threshold_fixed'] else ''}"
                      f"{' (the derived settings kept: no setting matched a quarter of the objects)' if record['kept_derived'] else ''}, min size {s['min_size']} px, "
                      f"smoothing {s.get('smoothing') or 0} px, dilation {s['dilation']} x {s['dilation']} "
                      f"(paper: {record['paper_dilation']})", flush=True)
    model.save(out)
    return model
