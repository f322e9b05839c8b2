"""Automatic ground truth for one image set: correct, project, segment, QC (METHOD.md 1.1-1.6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from stainseg.config import GroundTruthConfig
from stainseg.errors import StainsegError
from stainseg.groundtruth.cells import segment_cells
from stainseg.groundtruth.extent import CellExtent
from stainseg.groundtruth.illumination import apply_field, correct_illumination
from stainseg.groundtruth.nuclei import project_z, segment_nuclei
from stainseg.groundtruth.qc import qc_metrics
from stainseg.io.images import as_float


def _stack(image: np.ndarray, name: str) -> np.ndarray:
    try:
        data = as_float(np.asarray(image))
    except StainsegError as exc:
        raise StainsegError(f"stain {name!r}: {exc}") from None
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise StainsegError(f"stain {name!r} must be (Y, X) or (Z, Y, X), got shape {data.shape}")
    return data


def correct_stain(stack: np.ndarray, cfg: GroundTruthConfig, plate_field: np.ndarray | None = None) -> np.ndarray:
    """Illumination-correct every z-slice of a (Z, Y, X) stain, then mean-project it (1.1, 1.2).

    ``cfg.illumination``: ``"spline"`` fits each slice, ``"plate"`` divides by ``plate_field``
    (from :func:`plate_illumination`), ``"none"`` leaves the slices as they are.
    """
    if cfg.illumination == "spline":
        stack = correct_illumination(stack, cfg.spline_grid, cfg.spline_iterations)[0]
    elif cfg.illumination == "plate":
        if plate_field is None:
            raise StainsegError("illumination = 'plate' needs the plate's illumination function; compute it with plate_illumination")
        stack = apply_field(stack, plate_field)
    return project_z(stack)


def groundtruth_for_set(stains: Mapping[str, np.ndarray], nuclei_channel: str, cytoplasm_channel: str | None = None,
                        objects: str = "nuclei", cfg: GroundTruthConfig | None = None,
                        plate_fields: Mapping[str, np.ndarray] | None = None,
                        label_free: np.ndarray | None = None
                        ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Automatic labels of one image set from its stains.

    Parameters
    ----------
    stains : mapping of channel name -> (Z, Y, X) or (Y, X) ndarray
        The end-point stains of one image set, all the same size.
    nuclei_channel : str
        Name of the nuclear stain.
    cytoplasm_channel : str, optional
        Name of the cytoplasm / cell-body stain. ``objects="cells"`` needs it or ``label_free``.
    objects : {"nuclei", "cells"}
        Label nuclei (scenario B) or whole cells (scenario A).
    cfg : GroundTruthConfig, optional
        Illumination, diameter, minimum area, border and dilation settings (defaults when None).
    plate_fields : mapping of channel name -> (Y, X) ndarray, optional
        Plate illumination functions, used when ``cfg.illumination == "plate"``.
    label_free : (C, Y, X) or (Y, X) ndarray, optional
        The raw label-free input planes (phase contrast, bright-field, focal planes) of the same
        field. With ``objects="cells"`` and no cytoplasm channel, the cell extent comes from their
        texture by the recipe :meth:`CellExtent.for_groundtruth` of ``cfg`` (each plane
        illumination-corrected by its own spline fit unless ``cfg.illumination == "none"``; plate
        functions exist only for the stains): a model with ``cell_method = "nuclei"`` stores that
        recipe and grows its cells by it.

    Returns
    -------
    labels : (Y, X) ndarray of int32
        Instance labels (cell label = its nucleus' label for cells).
    qc : dict
        :func:`qc_metrics` of the labels against the stain they came from, plus ``n_nuclei``.
    extras : dict
        ``corrected``: channel -> corrected, projected (Y, X) float32 stain (for previews);
        ``nuclei``: the nuclei labels; ``label_free``: the corrected, mean-projected label-free
        plane when the cells came from it, and ``cell_extent``: the :class:`CellExtent` that grew them.
    """
    cfg = cfg or GroundTruthConfig()
    if objects not in ("nuclei", "cells"):
        raise StainsegError(f"objects must be 'nuclei' or 'cells', got {objects!r}")
    from_texture = objects == "cells" and not cytoplasm_channel
    needed = [nuclei_channel] + ([cytoplasm_channel] if objects == "cells" and not from_texture else [])
    if from_texture and label_free is None:
        raise StainsegError("objects = 'cells' needs a cytoplasm stain or the label-free input planes; "
                            "set channels.cytoplasm in the experiment file or pass label_free")
    missing = [c for c in needed if c not in stains]
    if missing:
        raise StainsegError(f"image set has no stain {', '.join(map(repr, missing))} (it has {', '.join(map(repr, stains))}); "
                            "check the channel names in the experiment file")
    stacks = {name: _stack(stains[name], name) for name in needed}
    shapes = {name: s.shape[-2:] for name, s in stacks.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{n!r} {shape[0]} x {shape[1]}" for n, shape in shapes.items())
        raise StainsegError(f"stains of one image set differ in size ({desc}); they must image the same field")
    fields = plate_fields or {}
    corrected = {name: correct_stain(s, cfg, fields.get(name)) for name, s in stacks.items()}

    nuclei = segment_nuclei(corrected[nuclei_channel], diameter=cfg.nucleus_diameter, min_area=cfg.min_area,
                            exclude_border=cfg.exclude_border)
    extras: dict[str, Any] = {"corrected": corrected, "nuclei": nuclei}
    if from_texture:
        extent = extras["cell_extent"] = CellExtent.for_groundtruth(cfg)
        planes = _label_free_planes(label_free, extent, nuclei.shape)
        labels = extent.grow(planes, nuclei)
        source = extras["label_free"] = project_z(planes)
    elif objects == "cells":
        labels = segment_cells(corrected[cytoplasm_channel], nuclei, cfg.cytoplasm_dilation)
        source = corrected[cytoplasm_channel]
    else:
        labels = nuclei
        source = corrected[nuclei_channel]
    metrics = qc_metrics(labels, source)
    metrics["n_nuclei"] = int(nuclei.max())
    return labels, metrics, extras


def _label_free_planes(label_free: np.ndarray, extent: CellExtent, shape: tuple[int, ...]) -> np.ndarray:
    """Label-free input as (C, Y, X) float32, corrected as ``extent`` prescribes (each plane by its own spline fit)."""
    planes = _stack(label_free, "label-free input")
    if planes.shape[-2:] != tuple(shape):
        raise StainsegError(f"label-free input is {planes.shape[-2]} x {planes.shape[-1]} pixels but the nuclear stain "
                            f"is {shape[0]} x {shape[1]}; they must image the same field")
    return extent.correct(planes)


def preview_png(path: str | Path, image: np.ndarray, labels: np.ndarray, colour: tuple[float, float, float] = (1.0, 0.9, 0.0)) -> Path:
    """Write object outlines over a stain as an 8-bit RGB PNG, atomically.

    The stain is scaled between its 0.5th and 99.8th percentiles; outlines are drawn in ``colour``.
    """
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from stainseg.io.atomic import atomic_path

    plane = project_z(image)
    labels = np.asarray(labels)
    if plane.shape != labels.shape:
        raise StainsegError(f"preview: image {plane.shape} and labels {labels.shape} differ in size", path)
    lo, hi = np.percentile(plane, [0.5, 99.8])
    grey = np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(plane)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(labels, mode="inner")] = colour
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(tmp, format="PNG")
    return path
