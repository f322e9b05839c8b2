"""Real label-free microscopy: nuclei and whole cells learned from automatic labels, scored on held-out fields.

For each data set the automatic labels are made with :func:`stainseg.automatic_labels` (nuclei from
the nuclear stain; whole cells from the nuclear stain + the label-free image itself, no cytoplasm
stain), a network is trained on some fields with :func:`stainseg.train` (label-free planes in,
automatic labels as targets), and held-out fields are segmented with :meth:`stainseg.Model.segment`.
Scores (% of true objects with per-object F >= 0.6, F1 of one-to-one matches at IoU 0.5, object
count ratio predicted / true):

- ``network_vs_manual``: the network against manual masks, where the field has them;
- ``auto_vs_manual``: the automatic labels against the manual masks;
- ``network_vs_auto``: the network against the automatic labels (the paper's cpgt).

Data sets (../shared/data; research use, never bundled):

- ``hela_nuclei``: phase -> nuclei, trained on deepcell HeLa s2-s4 and 3T3 s1, s3, s4; scored on
  HeLa s5, s6 (automatic nuclei), 3T3 s2 (manual nuclei) and the HeLa s7 plating series (counts);
- ``hela_cells``: phase -> whole cells, labels from the nuclear stain + phase only; trained on HeLa
  s2-s4, scored on HeLa s5, s6, s7 against manual cells, and on 3T3 s1, BMDM s1, MCF10A s2 (other
  cell types: the HeLa models and the automatic labels, both against manual cells). Two models: a
  cell network (``cell_method = "network"``: it learns the cell labels) and the default without a
  cytoplasm stain (``cell_method = "nuclei"``: a nuclei network, trained on HeLa s2-s4 and 3T3 s3, s4,
  whose nuclei the model grows into cells over the phase texture, ``seeded_*``); ``two_networks_*`` partitions the cell network's foreground
  between the nuclei of the second;
- ``isl``: phase planes of a 13-plane z-stack (``--isl-planes``, default z 2, 4, 6, 8, 10) -> nuclei, labels from DAPI; the one
  (top-half) field is split: train on the left part holding 60 % of the nuclei, score on the right
  part against the classical DAPI labels;
- ``sephace``: three bright-field planes -> nuclei, labels from DAPI; the one field split likewise.

``--start-from MODEL``: the one-field sets train from that model's weights (``[train] start_from``,
fine-tuning; e.g. the ``hela_nuclei`` model of ``--models``) and also report the start model alone
on the middle plane (``start_model_alone_vs_auto``).

Writes ``OUT/<data set>.json`` and ``OUT/<data set>.png`` (a crop of a held-out field: the label-free
image with the outlines of the automatic labels, the network result and the manual masks).

    .venv/bin/python benchmarks/real_labelfree.py [--only hela_nuclei,isl] [--minutes 4] [-o docs/img/real]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from skimage.segmentation import clear_border

import stainseg
from stainseg.config import ExperimentConfig
from stainseg.groundtruth.extent import cells_from_nuclei  # hela_cells: the two-network variant
from stainseg.io.atomic import atomic_path
from stainseg.io.images import read_image, read_labels
from stainseg.report.figures import overlay_panel

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------- helpers
def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """% F >= 0.6, F1@0.5 and the object counts of ``pred`` against ``truth``."""
    s = stainseg.evaluate(np.asarray(truth, np.int32), np.asarray(pred, np.int32))
    n_t, n_p = int(s["n_truth"]), int(s["n_pred"])
    return {"percent_f06": round(float(s["percent_f_above"]), 1), "f1": round(float(s["f1"]), 3),
            "n_truth": n_t, "n_pred": n_p, "count_ratio": round(n_p / n_t, 3) if n_t else None}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores pooled over fields (weighted by objects): % F >= 0.6 and F1 from the summed counts."""
    rows = [r for r in rows if r and r.get("n_truth")]
    if not rows:
        return {}
    n_t = sum(r["n_truth"] for r in rows)
    n_p = sum(r["n_pred"] for r in rows)
    above = sum(r["percent_f06"] * r["n_truth"] / 100.0 for r in rows)
    tp = sum(r["f1"] * (r["n_truth"] + r["n_pred"]) / 2.0 for r in rows)
    return {"percent_f06": round(100.0 * above / n_t, 1), "f1": round(2.0 * tp / (n_t + n_p), 3),
            "n_truth": n_t, "n_pred": n_p, "count_ratio": round(n_p / n_t, 3)}


def picture(path: Path, image: np.ndarray, panels: list[tuple[str, Optional[np.ndarray]]], title: str,
            box: tuple[slice, slice]) -> None:
    """One PNG: the label-free crop with the outlines of each label image in ``panels``."""
    items = [(caption, image[box], np.asarray(lab)[box]) for caption, lab in panels if lab is not None]
    data = overlay_panel(items, title)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def densest_box(labels: np.ndarray, side: int) -> tuple[slice, slice]:
    """A ``side`` x ``side`` window holding many objects (for the picture)."""
    h, w = labels.shape
    side = min(side, h, w)
    best, where = -1, (0, 0)
    for y in range(0, h - side + 1, max(1, side // 4)):
        for x in range(0, w - side + 1, max(1, side // 4)):
            n = np.unique(labels[y:y + side, x:x + side]).size
            if n > best:
                best, where = n, (y, x)
    return slice(where[0], where[0] + side), slice(where[1], where[1] + side)


#: The models of this run by data set.
TRAINED: dict[str, stainseg.Model] = {}


def train_model(images: list[np.ndarray], labels: list[np.ndarray], objects: str, args: argparse.Namespace,
                names: Optional[list[str]] = None, key: str = "model",
                nuclei: Optional[list[np.ndarray]] = None) -> tuple[stainseg.Model, float]:
    """Train (or, with ``--reuse``, load the model folder ``--models/key`` a previous run saved).

    ``nuclei`` (cells only): the nuclei labels too, so the model is a nuclei network that grows cells
    (``cell_method = "nuclei"``); without them a cell network learns ``labels``."""
    folder = args.models / key if args.models else None
    if args.reuse and folder is not None and (folder / "model.json").is_file():
        model = stainseg.Model.load(folder, device="cpu")
        if args.recalibrate:  # the instance settings again, as training makes them (same validation crops)
            from stainseg.segment.derive import object_statistics
            from stainseg.train.fit import validation_pairs

            targets = nuclei if model.cell_extent is not None and nuclei is not None else labels  # what the network learned
            prepared = [model.prepare(im) for im in images]
            from stainseg.scale import downsample_labels

            at_scale = [downsample_labels(np.asarray(t), model.preprocessing.downsample) for t in targets]  # as training had them
            val_images, val_labels = validation_pairs(prepared, at_scale, model.info)
            model.calibrate(val_images, val_labels, prepared=True, dilation=True, statistics=object_statistics(at_scale))
        TRAINED[key] = model
        return model, float(model.info.get("train_seconds", 0.0))
    t0 = time.perf_counter()
    minutes = args.split_minutes if key in ("isl", "sephace") else args.minutes
    cfg = ExperimentConfig(objects=objects)
    cfg.model.base_width = args.base_width
    cfg.train.augment_rotate, cfg.train.augment_intensity = args.rotate, args.intensity
    if args.downsample is not None:
        cfg.preprocess.downsample = args.downsample if args.downsample == "auto" else int(args.downsample)
    if key in ("isl", "sephace") and args.start_from:  # fine-tuning: the start model's architecture
        cfg.train.start_from = str(args.start_from)
    model = stainseg.train(images, labels, iterations=args.iterations, objects=objects, input_channels=names, cfg=cfg,
                           crop_size=args.crop_size, batch_size=args.batch_size, max_minutes=minutes,
                           device="cpu", seed=args.seed, progress=args.progress, nuclei=nuclei)
    model.segment_settings.device = "cpu"
    seconds = round(time.perf_counter() - t0, 1)
    model.info["train_seconds"] = seconds
    if folder is not None:
        model.save(folder)
    TRAINED[key] = model
    return model, seconds


def model_facts(model: stainseg.Model, seconds: float) -> dict[str, Any]:
    s = model.segment_settings
    return {"train_seconds": seconds, "iterations": model.info.get("iterations_run"), "foreground_factor": model.info.get("foreground_factor"),
            "downsample": model.preprocessing.downsample,
            "settings": {k: getattr(s, k) for k in ("threshold", "min_size", "min_distance", "min_depth", "dilation",
                                                    "smoothing") if hasattr(s, k)},
            "calibration": model.info.get("calibration"), "derived": model.derived.get("derived")}


# ---------------------------------------------------------------------------------------------- deepcell
def deepcell(name: str) -> dict[str, Any]:
    folder = DATA / "deepcell"
    field = {"name": name, "phase": read_image(folder / "images" / f"{name}_phase.tif"),
             "nuclear": read_image(folder / "images" / f"{name}_nuclear.tif")}
    cells = folder / "masks_cells" / f"{name}.tif"
    nuclei = folder / "masks_nuclei" / f"{name}.tif"
    field["manual_cells"] = read_labels(cells).astype(np.int32) if cells.exists() else None
    field["manual_nuclei"] = read_labels(nuclei).astype(np.int32) if nuclei.exists() else None
    return field


def auto_labels(field: dict[str, Any], objects: str) -> np.ndarray:
    if objects == "cells":
        return stainseg.automatic_labels(nuclei=field["nuclear"], objects="cells", label_free=field["phase"])
    return stainseg.automatic_labels(nuclei=field["nuclear"])


def deepcell_set(objects: str, train_names: list[str], test_names: list[str], args: argparse.Namespace,
                 out: Path, key: str, title: str, picture_field: str, seeded: bool = False,
                 seeded_extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train on ``train_names``, score ``test_names``; ``seeded`` (cells): also a ``cell_method = "nuclei"`` model,
    trained on ``train_names`` + ``seeded_extra`` (fields with a nuclear stain but no use as cell test fields)."""
    manual_key = "manual_cells" if objects == "cells" else "manual_nuclei"
    train = [deepcell(n) for n in train_names]
    t0 = time.perf_counter()
    labels = [auto_labels(f, objects) for f in train]
    label_s = time.perf_counter() - t0
    model, seconds = train_model([f["phase"] for f in train], labels, objects, args, names=["phase"], key=key)
    result: dict[str, Any] = {"objects": objects, "train": train_names, "labels_seconds": round(label_s, 1),
                              "model": model_facts(model, seconds), "fields": {}}
    seeded_model = None
    if seeded:
        # the default without a cytoplasm stain: a nuclei network, its nuclei grown into cells by the model itself
        extra = [deepcell(n) for n in seeded_extra]
        nuclei = [auto_labels(f, "nuclei") for f in train + extra]
        seeded_model, seeded_s = train_model([f["phase"] for f in train + extra], labels + [auto_labels(f, objects) for f in extra],
                                             objects, args, names=["phase"], key=f"{key}_nuclei", nuclei=nuclei)
        result["seeded_train"] = train_names + list(seeded_extra)
        result["seeded_model"] = {**model_facts(seeded_model, seeded_s), "cell_extent": seeded_model.cell_extent.to_dict()}
    for name in test_names:
        f = deepcell(name)
        auto = auto_labels(f, objects)
        t1 = time.perf_counter()
        net = model.segment(f["phase"])
        seg_s = time.perf_counter() - t1
        manual = f[manual_key]
        row: dict[str, Any] = {"shape": list(f["phase"].shape), "segment_seconds": round(seg_s, 2),
                               "network_vs_auto": scores(auto, net)}
        if manual is not None:
            row["network_vs_manual"] = scores(manual, net)
            row["auto_vs_manual"] = scores(manual, auto)
        seeded = None
        if seeded_model is not None:
            # no stain at all: the user's path (Model.run of the cell_method "nuclei" model) gives the nuclei and their cells
            t2 = time.perf_counter()
            run = seeded_model.run(f["phase"])
            row["seeded_segment_seconds"] = round(time.perf_counter() - t2, 2)
            seeded, seeds = run["labels"], run["nuclei"]
            # ... or the cell network's foreground, partitioned between the nuclei of that model
            both = cells_from_nuclei(seeded_model.cell_extent.correct(f["phase"]), seeds, foreground=net > 0)
            for kind, lab in (("seeded", seeded), ("two_networks", both)):
                row[f"{kind}_vs_auto"] = scores(auto, lab)
                if manual is not None:
                    row[f"{kind}_vs_manual"] = scores(manual, lab)
        if objects == "nuclei" and f["manual_cells"] is not None:
            # count check only: one nucleus per manual cell
            row["nuclei_per_manual_cell"] = round(int(net.max()) / max(1, len(np.unique(f["manual_cells"])) - 1), 3)
        result["fields"][name] = row
        print(f"{key:<12} {name:<10} " + "  ".join(f"{k}: {v['percent_f06']:5.1f}% F1 {v['f1']:.3f} n {v['n_pred']}/{v['n_truth']}"
                                                     for k, v in row.items() if isinstance(v, dict)), flush=True)
        if name == picture_field:
            box = densest_box(manual if manual is not None else auto, args.crop_picture)
            panels = [("automatic labels", auto), ("network", net)]
            if seeded is not None:
                panels.append(("nuclei network + phase extent", seeded))
            picture(out / f"{key}.png", f["phase"], panels + [("manual", manual)],
                    f"{title}: {name} (held out), {args.crop_picture} px crop", box)
    return result


def hela_nuclei(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    r = deepcell_set("nuclei", ["HeLa_s2", "HeLa_s3", "HeLa_s4", "3T3_s1", "3T3_s3", "3T3_s4"],
                     ["HeLa_s5", "HeLa_s6", "3T3_s2", "HeLa_s7"], args, out, "hela_nuclei",
                     "phase -> nuclei", "3T3_s2")
    r["summary"] = {"network_vs_auto (HeLa s5, s6)": pooled([r["fields"][n]["network_vs_auto"] for n in ("HeLa_s5", "HeLa_s6")]),
                    "network_vs_manual (3T3 s2)": r["fields"]["3T3_s2"].get("network_vs_manual"),
                    "auto_vs_manual (3T3 s2)": r["fields"]["3T3_s2"].get("auto_vs_manual")}
    return r


def hela_cells(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    r = deepcell_set("cells", ["HeLa_s2", "HeLa_s3", "HeLa_s4"],
                     ["HeLa_s5", "HeLa_s6", "HeLa_s7", "3T3_s1", "BMDM_s1", "MCF10A_s2"], args, out, "hela_cells",
                     "phase -> whole cells (nuclear stain only)", "HeLa_s5", seeded=True,
                     seeded_extra=("3T3_s3", "3T3_s4"))
    f = r["fields"]
    kinds = ["network_vs_manual", "auto_vs_manual", "network_vs_auto",
             "seeded_vs_manual", "seeded_vs_auto", "two_networks_vs_manual", "two_networks_vs_auto"]
    r["summary"] = {kind: pooled([f[n][kind] for n in ("HeLa_s5", "HeLa_s6")]) for kind in kinds}
    return r


# ---------------------------------------------------------------------------------------------- split fields
def split_column(labels: np.ndarray, fraction: float) -> int:
    """The column (a multiple of 8) left of which lie ``fraction`` of the objects' centres.

    Nuclei are rarely spread evenly over a field (isl: a dense cluster on the right, 6 nuclei on
    the left half): a cut by area could leave the network almost nothing to learn from.
    """
    from scipy import ndimage as ndi

    n = int(labels.max())
    if n == 0:
        return int(fraction * labels.shape[1]) // 8 * 8
    x = np.sort(np.array(ndi.center_of_mass(labels > 0, labels, range(1, n + 1)))[:, 1])
    cut = int(np.ceil(x[min(n - 1, int(round(fraction * n)))])) // 8 * 8
    return int(np.clip(cut, 64, labels.shape[1] - 96))


def split_field(key: str, planes: np.ndarray, stain: np.ndarray, names: list[str], args: argparse.Namespace,
                out: Path, title: str) -> dict[str, Any]:
    """One field: train on the left part, score on the right part (never seen) against the classical labels."""
    labels = stainseg.automatic_labels(nuclei=stain)
    cut = split_column(labels, args.train_fraction)
    model, seconds = train_model([planes[:, :, :cut]], [labels[:, :cut]], "nuclei", args, names=names, key=key)
    t1 = time.perf_counter()
    net = model.segment(planes)
    seg_s = time.perf_counter() - t1
    test = np.s_[:, cut + 16:]  # 16 px away from the training part
    truth, pred = clear_border(labels[test]), clear_border(net[test])
    row = {"shape": list(planes.shape), "cut_column": cut, "segment_seconds": round(seg_s, 2),
           "network_vs_auto": scores(truth, pred)}
    if args.start_from:  # the start model alone on the middle plane (no training on this field)
        start = stainseg.Model.load(args.start_from, device="cpu")
        if start.in_channels == 1:
            alone = start.segment(planes[planes.shape[0] // 2])
            row["start_model_alone_vs_auto"] = scores(truth, clear_border(alone[test]))
            row["start_from"] = str(args.start_from)
    v = row["network_vs_auto"]
    print(f"{key:<12} test part  network_vs_auto: {v['percent_f06']:5.1f}% F1 {v['f1']:.3f} n {v['n_pred']}/{v['n_truth']}", flush=True)
    image = planes[planes.shape[0] // 2][test]
    box = densest_box(truth, args.crop_picture)
    picture(out / f"{key}.png", image, [("automatic labels (stain)", truth), ("network", pred)],
            f"{title}: held-out part, {args.crop_picture} px crop", box)
    return {"objects": "nuclei", "model": model_facts(model, seconds), "fields": {"test part": row},
            "summary": {"network_vs_auto": v}}


def isl(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = DATA / "isl" / "images"
    z = [int(v) for v in args.isl_planes.split(",")]
    planes = np.stack([read_image(folder / f"isl_s1_phase_z{i:02d}.tif") for i in z]).astype(np.float32)
    dapi = read_image(folder / "isl_s1_dapi.tif")
    return split_field("isl", planes, dapi, [f"phase[z={i}]" for i in z], args, out, "isl phase z-stack -> nuclei")


def sephace(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = DATA / "sephace" / "Set1"
    files = sorted(folder.glob("fine_*.tif"), key=lambda p: float(p.stem.split("-Z")[-1]))
    planes = np.stack([read_image(p) for p in files]).astype(np.float32)
    dapi = read_image(folder / "fl.tif")
    return split_field("sephace", planes, dapi, [f"bf[{i}]" for i in range(len(files))], args, out,
                       "sephace bright-field -> nuclei")


SETS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "hela_nuclei": hela_nuclei, "hela_cells": hela_cells, "isl": isl, "sephace": sephace}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SETS), help="comma-separated data sets: " + ", ".join(SETS))
    ap.add_argument("-o", "--out", type=Path, default=REPO / "docs" / "img" / "real")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--minutes", type=float, default=4.0, help="training time limit per model (schedule compressed to fit)")
    ap.add_argument("--split-minutes", type=float, default=4.0, help="training time limit of the one-field sets (isl, sephace)")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--base-width", type=int, default=8, help="the network's first width (ModelConfig.base_width; the paper's 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-fraction", type=float, default=0.6, help="split fields (isl, sephace): the left part holding this fraction of the nuclei trains")
    ap.add_argument("--isl-planes", default="2,4,6,8,10", help="isl: the phase z-planes used as input channels (default: the five the package bundles)")
    ap.add_argument("--crop-picture", type=int, default=320)
    ap.add_argument("--start-from", type=Path, default=None,
                    help="isl, sephace: fine-tune from this model folder ([train] start_from), e.g. a phase->nuclei model of --models")
    ap.add_argument("--no-rotate", dest="rotate", action="store_false", help="[train] augment_rotate = false (the paper's flips only)")
    ap.add_argument("--intensity", type=float, default=0.3, help="[train] augment_intensity (0: off, the paper)")
    ap.add_argument("--downsample", default=None, help="[preprocess] downsample: an integer working-scale factor or \"auto\" (default: the config's default, 1)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--models", type=Path, default=None, help="save each trained model in MODELS/<data set>")
    ap.add_argument("--reuse", action="store_true", help="load the models of --models instead of training again")
    ap.add_argument("--recalibrate", action="store_true", help="with --reuse: derive and calibrate the instance settings again")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: the real data sets live in ../shared/data beside the repo")
    args.out.mkdir(parents=True, exist_ok=True)
    for key in args.only.split(","):
        if key not in SETS:
            raise SystemExit(f"unknown data set {key!r}; choose from {', '.join(SETS)}")
        t0 = time.perf_counter()
        result = SETS[key](args, args.out)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        result["command"] = "benchmarks/real_labelfree.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "progress", "only", "models", "reuse", "recalibrate")) + f" --only {key}"
        with atomic_path(args.out / f"{key}.json") as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1, default=str))
        print(f"{key}: {result['seconds']} s; summary {json.dumps(result.get('summary'))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
