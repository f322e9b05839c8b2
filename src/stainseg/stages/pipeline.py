"""`stainseg run` and `stainseg demo`: every stage in order, each skipped when its outputs are complete.

OUT/groundtruth → OUT/model (or OUT/model/<well>) → OUT/segmentation → OUT/evaluation → OUT/tracking
→ OUT/report.html, with OUT/run.json collecting config, versions, timings and the headline figures.
A stage is complete when its ``DONE.json`` exists; a killed run restarts at the first incomplete
stage, and inside a stage completed image sets (and training checkpoints) are reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from stainseg.config import ExperimentConfig, load_config, save_config
from stainseg.errors import StainsegError
from stainseg.io.atomic import read_csv, write_csv, write_json
from stainseg.io.images import read_labels
from stainseg.io.layout import ImageSet, endpoint_sets, is_test, same_value, scan, value_key
from stainseg.provenance import provenance


@dataclass
class RunResult:
    out: Path
    figures: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"run finished in {sum(self.timings.values()):.0f} s; report: {self.out / 'report.html'}"]
        for key, value in self.figures.items():
            if isinstance(value, float):
                value = f"{value:.3f}" if value <= 1.0 else f"{value:.1f}"
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def _stage(out: Path, name: str, redo: dict[str, bool], timings: dict[str, float], func: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage into OUT/name unless its DONE.json says it is complete; return its record.

    ``redo["all"]`` forces the stage; once a stage has run, every later stage is redone too (its
    inputs changed), so a retrained model never meets segmentations of the old one.
    """
    folder = out / name
    done = folder / "DONE.json"
    if done.exists() and not redo["all"]:
        record = json.loads(done.read_text())
        timings[name] = float(record.get("seconds", 0.0))  # what it took when it ran
        print(f"[{name}] complete, skipped (use --force to redo)", flush=True)
        return record
    print(f"[{name}] ...", flush=True)
    fresh = redo["all"]  # forced: do not reuse partial outputs either
    redo["all"] = True
    if done.exists():
        done.unlink()
    t0 = time.time()
    record = func(folder, fresh) or {}
    timings[name] = time.time() - t0
    record["seconds"] = round(timings[name], 2)
    write_json(done, record)
    return record


def _sets_by_name(cfg: ExperimentConfig) -> dict[str, ImageSet]:
    return {s.name: s for s in scan(cfg).image_sets}


def _manual_file(cfg: ExperimentConfig, iset: ImageSet) -> Path | None:
    """The manual mask of an image set: a file in [evaluation] manual whose stem is the set's name or a source file's stem."""
    if not cfg.evaluation.manual:
        return None
    folder = cfg.resolve_path(cfg.evaluation.manual)
    if not folder.is_dir():
        raise StainsegError("[evaluation] manual folder not found; fix the path (relative to the experiment file)", folder)
    stems = {iset.name} | {p.name.split(".")[0] for files in iset.channels.values() for p in files}
    for path in sorted(folder.iterdir()):
        if path.name.split(".")[0] in stems and path.suffix.lower() in (".tif", ".tiff", ".png"):
            return path
    return None


def _train_stage(cfg: ExperimentConfig, gt: Path) -> Callable[[Path], dict[str, Any]]:
    def run(folder: Path, fresh: bool) -> dict[str, Any]:
        from stainseg.stages.train import run_training

        if not cfg.train.per_well:
            history = run_training(cfg, folder, labels_dir=gt, resume=not fresh)
            return {"models": {"all": str(folder)}, "final": history}
        wells = sorted({r.get("well", "") for r in read_csv(gt / "index.csv")})
        models = {}
        for well in wells:
            history = run_training(cfg, folder / well, labels_dir=gt, resume=not fresh, wells=[well])
            models[well] = str(folder / well)
        return {"models": models, "final": history}

    return run


def _segment_stage(cfg: ExperimentConfig, models: dict[str, str]) -> Callable[[Path], dict[str, Any]]:
    def run(folder: Path, fresh: bool) -> dict[str, Any]:
        from stainseg.stages.segment import segment_experiment

        sets = scan(cfg).image_sets
        rows, failed = [], []
        for key, model in models.items():
            chosen = [s.name for s in sets if key == "all" or same_value(s.fields.get("well", ""), key)]
            result = segment_experiment(model, cfg, folder / ("" if key == "all" else key), resume=not fresh, only=chosen)
            rows += result.rows
            failed += result.failed
        if len(models) > 1:  # one table for the whole plate
            _merge_tables(folder, list(models))
        return {"images": len(rows), "cells": sum(int(r["cells"]) for r in rows), "failed": [list(f) for f in failed]}

    return run


def _merge_tables(folder: Path, wells: list[str]) -> None:
    for name in ("cells.csv", "index.csv"):
        rows: list[dict[str, Any]] = []
        for well in wells:
            if (folder / well / name).exists():
                rows += read_csv(folder / well / name)
        write_csv(folder / name, rows)
    (folder / "labels").mkdir(exist_ok=True)
    for well in wells:
        for path in (folder / well / "labels").glob("*.tif"):
            target = folder / "labels" / path.name
            if not target.exists():
                target.symlink_to(path.resolve())


def _label_path(seg: Path, name: str) -> Path:
    return seg / "labels" / f"{name}.tif"


def _evaluate_stage(cfg: ExperimentConfig, gt: Path, seg: Path) -> Callable[[Path], dict[str, Any]]:
    def run(folder: Path, fresh: bool) -> dict[str, Any]:
        from stainseg.evaluate.batch import evaluate_arrays
        from stainseg.stages.evaluate import write_evaluation

        sets = _sets_by_name(cfg)
        ends = {s.name for s in endpoint_sets(cfg, list(sets.values()))}
        test = [s for s in sets.values() if is_test(cfg, s) and _label_path(seg, s.name).exists()]
        if not test:
            test = [s for s in sets.values() if s.name in ends and _label_path(seg, s.name).exists()]
            print("[evaluation] no held-out image sets: scoring the training end points (optimistic)", flush=True)
        group = {s.name: "_".join(f"{s.fields[k]}" for k in ("well", "site") if k in s.fields) or s.name for s in test}
        figures: dict[str, Any] = {}
        cp_pairs = {s.name: (read_labels(gt / "labels" / f"{s.name}.tif"), read_labels(_label_path(seg, s.name)))
                    for s in test if s.name in ends and (gt / "labels" / f"{s.name}.tif").exists()}
        if cp_pairs:
            res = evaluate_arrays(cp_pairs, group_by=group)
            write_evaluation(res, folder / "cpgt", name="cpgt")
            figures["cpgt"] = _headline(res)
        man_pairs = {}
        for s in test:
            path = _manual_file(cfg, s)
            if path is not None:
                man_pairs[s.name] = (read_labels(path), read_labels(_label_path(seg, s.name)))
        if man_pairs:
            res = evaluate_arrays(man_pairs, group_by=group)
            write_evaluation(res, folder / "mangt", name="mangt")
            figures["mangt"] = _headline(res)
            # the automatic labels themselves against the manual truth: what the network learned from
            auto = {n: (man_pairs[n][0], read_labels(gt / "labels" / f"{n}.tif"))
                    for n in man_pairs if (gt / "labels" / f"{n}.tif").exists()}
            if auto:
                res = evaluate_arrays(auto, group_by=group)
                write_evaluation(res, folder / "auto_vs_mangt", name="automatic labels")
                figures["automatic_labels_vs_mangt"] = _headline(res)
        if not figures:
            raise StainsegError("nothing to evaluate: no held-out image set has both a segmentation and ground truth")
        return figures

    return run


def _headline(res: dict[str, Any]) -> dict[str, Any]:
    o = res["overall"]
    return {"images": len(res["images"]), "objects": o["n_truth"], "percent_f_ge_0.6": o["percent_f_above"],
            "median_f": o["median_f"], "f1_iou50": o["f1"], "precision_iou50": o["precision"],
            "recall_iou50": o["recall"], "mean_ap": o["mean_ap"], "per_image": o.get("per_image_percent_f_above")}


def _tracking_stage(cfg: ExperimentConfig, seg: Path) -> Callable[[Path], dict[str, Any]]:
    def run(folder: Path, fresh: bool) -> dict[str, Any]:
        from stainseg.tracking import endpoint_identity, link_accuracy, track_frames

        sets = list(_sets_by_name(cfg).values())
        positions: dict[tuple, list[ImageSet]] = {}
        for s in sets:
            if "time" in s.fields and _label_path(seg, s.name).exists():
                positions.setdefault(tuple((k, v) for k, v in s.fields.items() if k != "time"), []).append(s)
        if not positions:
            return {"tracked_positions": 0, "note": "no time field in the pattern: nothing to track"}
        truth_tracks = _read_true_tracks(cfg)
        all_rows, accs = [], []
        for pos, group in positions.items():
            group.sort(key=lambda s: value_key(s.fields["time"]))
            frames = [read_labels(_label_path(seg, s.name)) for s in group]
            rows = track_frames(frames)
            ident = endpoint_identity(rows)
            prefix = "_".join(v for _, v in pos)
            for r in rows:
                s = group[r["frame"]]
                all_rows.append({**dict(pos), "time": s.fields["time"], "image": s.name, "label": r["label"],
                                 "track_id": f"{prefix}:{r['track_id']}", "parent_track_id": f"{prefix}:{r['parent_track_id']}" if r["parent_track_id"] else "",
                                 "endpoint_label": ident.get(r["track_id"], 0), "y": r["y"], "x": r["x"]})
            if truth_tracks is not None and cfg.evaluation.manual:
                key = dict(pos)
                truth = {(i, int(t["label"])): (int(t["track_id"]), int(t["parent_track_id"] or 0))
                         for i, s in enumerate(group) for t in truth_tracks
                         if all(same_value(t.get(k, ""), v) for k, v in key.items()) and same_value(t["time"], s.fields["time"])}
                manual = [_manual_file(cfg, s) for s in group]
                if truth and all(manual):
                    acc = link_accuracy([read_labels(p) for p in manual], truth, frames, rows)
                    accs.append({**key, **acc})
        write_csv(folder / "tracks.csv", all_rows)
        _add_tracks_to_cells(seg, all_rows)
        record: dict[str, Any] = {"tracked_positions": len(positions), "tracks": len({r["track_id"] for r in all_rows}),
                                  "divisions": len({r["track_id"] for r in all_rows if r["parent_track_id"]})}
        if accs:
            links = sum(a["links"] for a in accs)
            record["link_accuracy"] = sum(a["correct"] for a in accs) / links if links else float("nan")
            record["per_position"] = accs
        return record

    return run


def _read_true_tracks(cfg: ExperimentConfig) -> list[dict[str, str]] | None:
    if not cfg.evaluation.tracks:
        return None
    return read_csv(cfg.resolve_path(cfg.evaluation.tracks))


def _add_tracks_to_cells(seg: Path, tracks: list[dict[str, Any]]) -> None:
    """Add track_id and endpoint_label columns to OUT/segmentation/cells.csv."""
    cells_path = seg / "cells.csv"
    if not cells_path.exists():
        return
    by_cell = {(t["image"], str(t["label"])): t for t in tracks}
    rows = read_csv(cells_path)
    for r in rows:
        t = by_cell.get((r["image"], r["label"]), {})
        r["track_id"] = t.get("track_id", "")
        r["endpoint_label"] = t.get("endpoint_label", "")
    write_csv(cells_path, rows)


def run_experiment(cfg: ExperimentConfig, out: str | Path, force: bool = False, extra: dict[str, Any] | None = None) -> RunResult:
    """Everything for one experiment: labels, QC, training, segmentation, evaluation, tracking, report.

    ``extra`` (the demo's real section) adds ``figures``, ``timings`` and ``stages`` records to
    the report and ``run.json``."""
    from stainseg.stages.groundtruth import run_groundtruth
    from stainseg.report.html import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.toml")
    timings: dict[str, float] = {}
    redo = {"all": force}
    gt_rec = _stage(out, "groundtruth", redo, timings,
                    lambda f, fresh: {"text": run_groundtruth(cfg, f, preview=True, force=fresh).text()})
    train_rec = _stage(out, "model", redo, timings, _train_stage(cfg, out / "groundtruth"))
    seg_rec = _stage(out, "segmentation", redo, timings, _segment_stage(cfg, train_rec["models"]))
    eval_rec = _stage(out, "evaluation", redo, timings, _evaluate_stage(cfg, out / "groundtruth", out / "segmentation"))
    track_rec = _stage(out, "tracking", redo, timings, _tracking_stage(cfg, out / "segmentation"))
    figures = _figures(gt_rec, train_rec, seg_rec, eval_rec, track_rec)
    extra = extra or {}
    figures.update(extra.get("figures", {}))
    timings.update(extra.get("timings", {}))
    t0 = time.time()
    write_report(out, cfg, figures, timings)
    timings["report"] = time.time() - t0
    write_json(out / "run.json", {"stage": "run", **provenance(cfg), "timings_s": {k: round(v, 2) for k, v in timings.items()},
                                  "figures": figures, "stages": {"groundtruth": gt_rec, "model": train_rec, "segmentation": seg_rec,
                                                                  "evaluation": eval_rec, "tracking": track_rec, **extra.get("stages", {})}})
    return RunResult(out=out, figures=figures, timings=timings)


def _figures(gt_rec: dict, train_rec: dict, seg_rec: dict, eval_rec: dict, track_rec: dict) -> dict[str, Any]:
    figures: dict[str, Any] = {"segmented_images": seg_rec.get("images"), "segmented_cells": seg_rec.get("cells")}
    for key in ("cpgt", "mangt", "automatic_labels_vs_mangt"):
        if key in eval_rec:
            figures[f"{key} % F>=0.6"] = eval_rec[key]["percent_f_ge_0.6"]
            figures[f"{key} F1@IoU0.5"] = eval_rec[key]["f1_iou50"]
    if "link_accuracy" in track_rec:
        figures["tracking link accuracy"] = track_rec["link_accuracy"]
    return figures


def demo_config(folder: Path, size: int = 256, sites: int = 3, times: int = 6, seed: int = 0) -> ExperimentConfig:
    """Write the demo's synthetic experiment (if absent) and return its config, scored against its true labels."""
    from stainseg.synth import generate_experiment

    toml = folder / "experiment.toml"
    if not toml.exists():
        generate_experiment(folder, wells=1, sites=sites, times=times, size=size, seed=seed, preview=True)
    cfg = load_config(toml)
    # under a minute on an idle 2-core laptop: a short schedule, with a time guard so that the whole demo
    # (this part and the real section) stays under 3 minutes on a busy or slow machine
    cfg.train.iterations = cfg.train.iterations or 500
    cfg.train.max_minutes = cfg.train.max_minutes or 1.25
    cfg.evaluation.manual = str((folder / "truth" / "cells").resolve())
    cfg.evaluation.tracks = str((folder / "truth" / "tracks.csv").resolve())
    return cfg


#: The demo's real section: planes of the bundled ``isl`` crop used as input, the held-out columns,
#: and a short training (measured: see README, "Demo").
REAL_DEMO: dict[str, Any] = {"planes": (2, 6, 10), "split": "columns", "test_from": 256, "iterations": 150, "max_minutes": 0.75,
                             "crop_size": 128, "seed": 0}


def run_real_section(folder: Path, fresh: bool = False, **options: Any) -> dict[str, Any]:
    """The demo's real section on the bundled ``isl`` crop: DAPI labels, a network on the phase planes, held-out scores.

    Labels come from the DAPI image (:func:`stainseg.automatic_labels`); a network is trained on the
    phase-contrast planes of the left part of the crop (:func:`stainseg.train`), segments the right
    part (:meth:`stainseg.Model.segment`), and is scored there against the DAPI labels
    (:func:`stainseg.evaluate`). Writes ``phase.tif`` (input planes), ``dapi_labels.tif``,
    ``network_labels.tif`` (held-out part), ``model/`` and ``result.json``; returns the record.

    Example
    -------
    >>> record = run_real_section(Path("out/demo/real"), iterations=50)  # doctest: +SKIP
    >>> record["scores"]["percent_f_above"]  # doctest: +SKIP
    """
    import numpy as np
    from skimage.segmentation import relabel_sequential

    import stainseg
    from stainseg.data import isl_sample
    from stainseg.io.images import write_image, write_labels

    opts = {**REAL_DEMO, **options}
    folder.mkdir(parents=True, exist_ok=True)
    sample = isl_sample(opts["planes"])
    phase, dapi = sample["phase"], sample["dapi"]
    cut = int(opts["test_from"])
    h, w = dapi.shape
    if opts["split"] == "rows":  # training part above, held-out part below
        train_part, test_part = (slice(0, cut), slice(0, w)), (slice(cut, h), slice(0, w))
    else:  # training part left, held-out part right
        train_part, test_part = (slice(0, h), slice(0, cut)), (slice(0, h), slice(cut, w))
    t0 = time.time()
    labels = stainseg.automatic_labels(nuclei=dapi)
    t_labels = time.time() - t0
    train_labels = relabel_sequential(labels[train_part])[0]
    test_truth = relabel_sequential(labels[test_part])[0]
    names = [f"phase_z{z:02d}" for z in sample["planes"]]
    t0 = time.time()
    model = stainseg.train([phase[(slice(None), *train_part)]], [train_labels], out=folder / "model", iterations=int(opts["iterations"]),
                           input_channels=names, progress=False, max_minutes=None if opts["max_minutes"] is None else float(opts["max_minutes"]),
                           crop_size=int(opts["crop_size"]), seed=int(opts["seed"]))
    t_train = time.time() - t0
    t0 = time.time()
    predicted = model.segment(phase[(slice(None), *test_part)])
    t_segment = time.time() - t0
    scores = stainseg.evaluate(test_truth, predicted)
    write_image(folder / "phase.tif", phase)
    write_labels(folder / "dapi_labels.tif", labels)
    write_labels(folder / "network_labels.tif", predicted)
    history = model.history[-1] if getattr(model, "history", None) else {}
    record = {"data": sample["citation"], "crop": "384 x 512 px of the isl field (stainseg/data/isl)",
              "input_planes": names, "split": opts["split"],
              "train_part": [[sl.start, sl.stop] for sl in train_part], "test_part": [[sl.start, sl.stop] for sl in test_part],
              "train_objects": int(train_labels.max()), "test_objects": int(test_truth.max()), "predicted_objects": int(predicted.max()),
              "iterations": int(history.get("iteration", opts["iterations"])), "planned_iterations": int(opts["iterations"]),
              "max_minutes": opts["max_minutes"],
              "scores": {k: scores[k] for k in ("percent_f_above", "median_f", "f1", "precision", "recall", "n_truth", "n_pred")},
              "seconds": {"labels": round(t_labels, 2), "train": round(t_train, 2), "segment": round(t_segment, 2)}}
    write_json(folder / "result.json", record)
    return record


def run_demo(out: str | Path, force: bool = False, real: bool = True) -> RunResult:
    """The real section on the bundled phase-contrast crop, then `run` on a synthetic time-lapse made on the fly.

    The real part writes OUT/real (:func:`run_real_section`), the synthetic part OUT/groundtruth
    ... OUT/tracking; OUT/report.html and OUT/run.json show both (about 2.5 minutes on 2 busy cores).
    """
    out = Path(out)
    cfg = demo_config(out / "experiment")
    extra: dict[str, Any] = {}
    if real:
        timings: dict[str, float] = {}
        record = _stage(out, "real", {"all": force}, timings, lambda f, fresh: run_real_section(f, fresh))
        sc = record["scores"]
        print(f"[real] bundled phase-contrast crop, held-out part: {sc['percent_f_above']:.1f} % of DAPI nuclei "
              f"with F >= 0.6, F1@IoU0.5 {sc['f1']:.3f} ({record['predicted_objects']} objects for "
              f"{record['test_objects']} nuclei)", flush=True)
        extra = {"timings": {"real section": timings["real"]}, "stages": {"real": record},
                 "figures": {"real: % F>=0.6 vs DAPI labels": sc["percent_f_above"], "real: F1@IoU0.5 vs DAPI labels": sc["f1"]}}
    return run_experiment(cfg, out, force=force, extra=extra)
