"""`stainseg groundtruth`: automatic labels for every end-point image set of an experiment.

Writes ``OUT/labels/<image set>.tif``, ``OUT/index.csv``, ``OUT/qc.csv``, ``OUT/run.json`` and,
with ``preview``, ``OUT/previews/<image set>.png``. Cells made without a cytoplasm stain (from the
nuclei and the label-free texture) also keep their nuclei in ``OUT/nuclei/<image set>.tif``: a model
with ``cell_method = "nuclei"`` learns those. Image sets whose label file and record are
complete are not redone (a killed run continues where it stopped).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stainseg.config import ExperimentConfig, config_from_dict, config_to_dict, save_config
from stainseg.errors import StainsegError
from stainseg.io.atomic import write_csv, write_json
from stainseg.io.images import write_labels
from stainseg.io.layout import ImageSet, check_channels, endpoint_sets, is_test, scan
from stainseg.stages.parallel import map_tasks
from stainseg.provenance import provenance


@dataclass
class GroundTruthSummary:
    out: Path
    rows: list[dict[str, Any]]
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        n_obj = sum(int(r["objects"]) for r in self.rows)
        excluded = sum(1 for r in self.rows if str(r.get("exclude")) == "True")
        lines = [f"ground truth: {len(self.rows)} image sets, {n_obj} objects, {excluded} excluded by QC; wrote {self.out}"]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"failed: {name}: {why}" for name, why in self.failed]
        return "\n".join(lines)


def stain_channels(cfg: ExperimentConfig) -> list[str]:
    """The stain channels the labels are made from (nuclei, and cytoplasm for cells when there is one)."""
    chans = [cfg.channels.nuclei]
    if cfg.objects == "cells":
        chans.append(cfg.channels.cytoplasm)
    return [c for c in chans if c]


def keeps_nuclei(cfg: ExperimentConfig) -> bool:
    """True when the labels are cells grown from the nuclei over the label-free texture (no cytoplasm stain):
    the nuclei are then written too (``OUT/nuclei/``), for ``cell_method = "nuclei"``.

    Examples
    --------
    >>> from stainseg.config import ChannelsConfig
    >>> keeps_nuclei(ExperimentConfig(objects="cells")), keeps_nuclei(ExperimentConfig(objects="nuclei"))
    (True, False)
    >>> keeps_nuclei(ExperimentConfig(objects="cells", channels=ChannelsConfig(cytoplasm="CellTracker")))
    False
    """
    return cfg.objects == "cells" and not cfg.channels.cytoplasm


def nuclei_path(gt_dir: str | Path, image_set: str) -> Path:
    """Where a ground-truth folder keeps the nuclei of an image set whose labels are cells grown from them."""
    return Path(gt_dir) / "nuclei" / f"{image_set}.tif"


def _plate_fields(cfg: ExperimentConfig, sets: list[ImageSet]) -> dict[str, np.ndarray]:
    """One illumination function per stain channel from all end-point sets (CellProfiler's plate median)."""
    from stainseg.groundtruth.illumination import plate_illumination

    fields = {}
    for ch in stain_channels(cfg):
        images = [sets[0].load(ch).mean(axis=0)]
        for s in sets[1:]:
            images.append(s.load(ch).mean(axis=0))
            if images[-1].shape != images[0].shape:
                raise StainsegError(f"image set {s.name} is {images[-1].shape} pixels but {sets[0].name} is {images[0].shape}; "
                                    "plate illumination needs equally sized images: set [groundtruth] illumination = \"spline\"",
                                    s.files(ch)[0])
        fields[ch] = plate_illumination(images)
    return fields


def _gt_task(task: dict[str, Any]) -> dict[str, Any]:
    """Labels for one image set (runs in a worker: reads its own files, writes its own outputs)."""
    from stainseg.groundtruth import groundtruth_for_set, preview_png

    cfg = config_from_dict(task["config"], task.get("source", "<config>"))
    iset = ImageSet(fields=task["fields"], channels={k: [Path(p) for p in v] for k, v in task["channels"].items()})
    label_path = Path(task["label_path"])
    record_path = Path(task["record_path"])
    nuclei_file = Path(task["nuclei_path"]) if task.get("nuclei_path") else None
    done = label_path.exists() and record_path.exists() and (nuclei_file is None or nuclei_file.exists())
    if done and not task["force"]:
        return json.loads(record_path.read_text())
    stains = {ch: iset.load(ch) for ch in stain_channels(cfg)}
    plate = {ch: np.load(path) for ch, path in (task.get("plate_fields") or {}).items()}
    # cells without a cytoplasm stain: their extent comes from the label-free input channels
    label_free = iset.load_stack(cfg.channels.input) if keeps_nuclei(cfg) else None
    try:
        labels, qc, extras = groundtruth_for_set(stains, cfg.channels.nuclei, cfg.channels.cytoplasm, cfg.objects,
                                                 cfg.groundtruth, plate_fields=plate or None, label_free=label_free)
    except StainsegError as exc:
        raise StainsegError(f"image set {iset.name}: {exc}", iset.files(cfg.channels.nuclei)[0]) from None
    if nuclei_file is not None:
        write_labels(nuclei_file, extras["nuclei"])  # before the cells: a set is done when its label file exists
    write_labels(label_path, labels)
    if task["preview_path"]:
        corrected = extras.get("corrected", {})
        shown = corrected.get(cfg.channels.cytoplasm if cfg.objects == "cells" else cfg.channels.nuclei)
        if shown is None and label_free is not None:
            shown = extras.get("label_free")
        if shown is None:
            shown = stains[cfg.channels.nuclei].mean(axis=0)
        preview_png(task["preview_path"], shown, labels)
    record = {"image_set": iset.name, **task["fields"], "objects": int(np.count_nonzero(np.unique(labels))),
              "label_file": str(label_path), "sources": ";".join(str(p) for ch in stain_channels(cfg) for p in iset.files(ch)),
              "split": "test" if task["test"] else "train", **qc}
    write_json(record_path, record)
    return record


def run_groundtruth(cfg: ExperimentConfig, out: str | Path, preview: bool = False, force: bool = False,
                    workers: int = 0, scheduler: str | None = None, progress: bool = True) -> GroundTruthSummary:
    """Make automatic labels for every end-point image set of the experiment.

    One process writes an OUT at a time (``OUT/.stainseg.lock``); temporaries left by a killed
    run are removed first. Returns a summary; raises :class:`StainsegError` when nothing could be labelled.
    """
    from stainseg.io.atomic import remove_stale_temps
    from stainseg.io.lock import folder_lock

    out = Path(out)
    with folder_lock(out, "stainseg groundtruth"):
        for sub in ("", "labels", "records", "previews", "nuclei"):
            remove_stale_temps(out / sub)
        return _run_groundtruth(cfg, out, preview=preview, force=force, workers=workers, scheduler=scheduler, progress=progress)


def _run_groundtruth(cfg: ExperimentConfig, out: Path, preview: bool, force: bool, workers: int, scheduler: str | None,
                     progress: bool) -> GroundTruthSummary:
    from stainseg.groundtruth.qc import QC_RULES, qc_table

    t0 = time.time()
    out = Path(out)
    layout = scan(cfg)
    sets = endpoint_sets(cfg, layout.image_sets)
    check_channels(cfg, sets, stains=True)
    warnings = [line for line in layout.summary().splitlines()[1:]]
    plate = {}
    if cfg.groundtruth.illumination == "plate":
        (out / "illumination").mkdir(parents=True, exist_ok=True)
        for ch, fld in _plate_fields(cfg, sets).items():
            np.save(out / "illumination" / f"{ch}.npy", fld.astype(np.float32))
            plate[ch] = str(out.resolve() / "illumination" / f"{ch}.npy")
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(parents=True, exist_ok=True)
    if keeps_nuclei(cfg):
        (out / "nuclei").mkdir(parents=True, exist_ok=True)
    cfg_dict = config_to_dict(cfg)
    cfg_dict["root"] = str(cfg.root_path.resolve())
    tasks = [{
        "config": cfg_dict, "source": cfg.source, "fields": s.fields,
        "channels": {k: [str(p.resolve()) for p in v] for k, v in s.channels.items()},  # absolute: workers run elsewhere
        "label_path": str(out.resolve() / "labels" / f"{s.name}.tif"), "record_path": str(out.resolve() / "records" / f"{s.name}.json"),
        "preview_path": str(out.resolve() / "previews" / f"{s.name}.png") if preview else "",
        "nuclei_path": str(nuclei_path(out.resolve(), s.name)) if keeps_nuclei(cfg) else "",
        "plate_fields": plate, "test": is_test(cfg, s), "force": force,
    } for s in sets]
    result = map_tasks(_gt_task, tasks, [s.name for s in sets], workers=workers, scheduler=scheduler, desc="ground truth", progress=progress,
                        shared=[str(out.resolve()), str(cfg.root_path.resolve())])
    rows = [r for r in result.results if r is not None]
    if not rows:
        first = result.failed[0][1] if result.failed else "no image sets"
        raise StainsegError(f"no ground truth could be made: {first}")
    rows = qc_table(rows, qc_mad=cfg.groundtruth.qc_mad)
    meta = [k for k in sets[0].fields]
    lead = ["image_set", *meta, "split", "objects", "exclude", "reason", "label_file", "sources"]
    write_csv(out / "index.csv", rows, columns=[c for c in lead if c != "reason"] + ["reason"])
    qc_cols = ["image_set", *meta, "split", *QC_RULES, "flag", "exclude", "reason"]
    write_csv(out / "qc.csv", rows, columns=qc_cols)
    save_config(cfg, out / "config.toml")
    write_json(out / "run.json", {"stage": "groundtruth", **provenance(cfg), "seconds": round(time.time() - t0, 2),
                                  "image_sets": len(rows), "failed": [{"image_set": n, "error": e} for n, e in result.failed],
                                  "warnings": warnings})
    return GroundTruthSummary(out=out, rows=rows, failed=result.failed, warnings=warnings)


def read_index(gt_dir: str | Path) -> list[dict[str, str]]:
    """Rows of a ground-truth folder's index.csv (one per image set)."""
    from stainseg.io.atomic import read_csv

    gt_dir = Path(gt_dir)
    if not (gt_dir / "index.csv").is_file():
        raise StainsegError("is not a ground-truth folder (no index.csv); run `stainseg groundtruth` first", gt_dir)
    return read_csv(gt_dir / "index.csv")
