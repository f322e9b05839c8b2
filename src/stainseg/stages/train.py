"""`stainseg train`: automatic labels (made now, or reused) + the input channels of the training sites → a model directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stainseg.config import ExperimentConfig
from stainseg.errors import StainsegError
from stainseg.io.atomic import write_text
from stainseg.io.images import read_labels
from stainseg.io.layout import endpoint_sets, same_value, scan


def training_data(cfg: ExperimentConfig, labels_dir: Path, wells: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Raw input stacks and automatic labels of the training end points (QC-excluded and test sets left out).

    Returns ``(images, labels, facts)``; ``facts`` records which image sets were used and why others were not.
    """
    from stainseg.stages.groundtruth import read_index

    index = read_index(labels_dir)
    sets = {s.name: s for s in endpoint_sets(cfg, scan(cfg).image_sets)}
    used, skipped = [], []
    images, labels = [], []
    for row in index:
        name = row["image_set"]
        if row.get("split") == "test":
            continue
        if wells is not None and not any(same_value(row.get("well", ""), w) for w in wells):
            continue
        if row.get("exclude") == "True":
            skipped.append(f"{name}: {row.get('reason', 'QC')}")
            continue
        if name not in sets:
            skipped.append(f"{name}: no longer found under the experiment root")
            continue
        label = read_labels(labels_dir / "labels" / f"{name}.tif")
        if not label.any():
            skipped.append(f"{name}: no objects in the automatic labels")
            continue
        stack = sets[name].load_stack(cfg.channels.input)
        if stack.shape[1:] != label.shape:
            raise StainsegError(f"input shape {stack.shape[1:]} differs from its label image {label.shape}; labels and images must come from the same experiment",
                                labels_dir / "labels" / f"{name}.tif")
        images.append(stack)
        labels.append(label)
        used.append(name)
    if not images:
        why = f" ({skipped[0]})" if skipped else ""
        raise StainsegError(f"no training image sets left{why}; check [split], the QC table (qc.csv) and the labels", labels_dir)
    if any(im.shape[0] != images[0].shape[0] for im in images):
        raise StainsegError("image sets differ in their number of input planes; check that every input channel has the same z-planes everywhere", labels_dir)
    first = sets[used[0]]  # one name per network input plane, e.g. BF[z=0], BF[z=1] ... for model.json
    planes = [f"{ch}[z={z}]" if z else ch for ch in cfg.channels.input for z in first.z_values.get(ch, [""])]
    facts = {"training_image_sets": used, "skipped_image_sets": skipped, "plane_names": planes,
             "qc_excluded": sum(1 for r in index if r.get("exclude") == "True")}
    return images, labels, facts


def training_nuclei(labels_dir: str | Path, image_sets: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The nuclei labels a ground-truth folder keeps beside its cell labels (``nuclei/<image set>.tif``), for
    ``cell_method = "nuclei"``; a missing file is a one-line error that says how to make it."""
    from stainseg.stages.groundtruth import nuclei_path

    nuclei = []
    for name, shape in zip(image_sets, shapes):
        path = nuclei_path(labels_dir, name)
        if not path.is_file():
            raise StainsegError("is missing: cell_method \"nuclei\" trains on the nuclei of the automatic cell labels; "
                                "re-run 'stainseg groundtruth' (this version keeps them) or set cell_method = \"network\"", path)
        lab = read_labels(path)
        if lab.shape != tuple(shape):
            raise StainsegError(f"nuclei labels {lab.shape} differ in size from the cell labels {tuple(shape)} of the same image set; "
                                "re-run 'stainseg groundtruth'", path)
        nuclei.append(lab)
    return nuclei


def run_training(cfg: ExperimentConfig, out: str | Path, labels_dir: str | Path | None = None, resume: bool = False,
                 wells: Sequence[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Make (or reuse) automatic labels, then train; ``out`` becomes a complete model directory.

    With ``cfg.cell_route() == "nuclei"`` (cells without a cytoplasm stain) the network learns the nuclei
    the ground truth kept (:func:`training_nuclei`) and the model grows them into cells.

    Returns the last row of the training history.
    """
    from stainseg.stages.groundtruth import run_groundtruth
    from stainseg.train.fit import fit_model

    out = Path(out)
    rank = int(os.environ.get("RANK", "0"))
    if labels_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise StainsegError("under torchrun, make the labels once first (stainseg groundtruth EXP -o GT), then train with --labels GT")
    if labels_dir is None:
        labels_dir = out / "groundtruth"
        summary = run_groundtruth(cfg, labels_dir, progress=progress)
        print(summary.text(), flush=True)
    labels_dir = Path(labels_dir)
    images, labels, facts = training_data(cfg, labels_dir, wells)
    facts["labels_dir"] = str(labels_dir.resolve())
    nuclei = None
    if cfg.cell_route() == "nuclei":
        nuclei = training_nuclei(labels_dir, facts["training_image_sets"], [lab.shape for lab in labels])
    model = fit_model(images, labels, cfg, out, input_channels=cfg.channels.input, plane_names=facts["plane_names"], resume=resume,
                      progress=progress, facts=facts, nuclei=nuclei)
    if model is None or rank != 0:  # under torchrun, rank 0 writes the model folder
        return {}
    qc = labels_dir / "qc.csv"
    if qc.exists():
        write_text(out / "labels_qc.csv", qc.read_text())
    return dict(model.history[-1]) if model.history else {}
