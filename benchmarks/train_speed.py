"""Train on AUTOMATIC labels only, test against MANUAL masks (BBBC039, scenario "nuclei from nuclei").

The paper's central claim on the one public set with manual masks: ~70 BBBC039 Hoechst images get
automatic labels (stainseg.groundtruth.nuclei.segment_nuclei: Otsu + distance watershed), the
model learns them from the raw Hoechst image itself (:func:`stainseg.train.fit.fit_model`:
``Model.prepare``, training, calibration of the instance settings on the validation crops), and the
other 30 images are segmented as ``stainseg segment`` does (``model.prepare`` →
``model.predict_prepared``) and scored against their manual masks: with the model's own
(calibrated) settings, and with dilation 1 and 3 (its other settings; ``--threshold`` overrides its
threshold). Acceptance: >= 90 % of nuclei with F >= 0.6, F1 at IoU 0.5
>= 0.90, fast preset <= 15 minutes on the 2-core CPU.

Prints the training time, the scores of the network and, as a reference, the scores of the
automatic labels themselves on the same 30 test images.

Usage::

    .venv/bin/python benchmarks/train_speed.py --head 3class --max-minutes 12 -o /tmp/bench3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stainseg.config import ChannelsConfig, ExperimentConfig, ModelConfig, TrainConfig
from stainseg.evaluate.summary import evaluate_pair
from stainseg.groundtruth.nuclei import segment_nuclei
from stainseg.io.images import read_labels, read_plane
from stainseg.model import Model
from stainseg.segment.instances import probability_to_labels
from stainseg.train.fit import fit_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"


def load_split(data: Path, n_train: int, seed: int, cache: Path | None):
    images = sorted((data / "images").glob("*.tif"))
    order = np.random.default_rng(seed).permutation(len(images))
    train_files = [images[i] for i in sorted(order[:n_train])]
    test_files = [images[i] for i in sorted(order[n_train:])]
    raw = {p: read_plane(p).astype(np.float32) for p in images}
    if cache is not None and cache.is_file():
        auto = dict(np.load(cache))
    else:
        auto = {p.stem: segment_nuclei(raw[p]) for p in images}
        if cache is not None:
            np.savez_compressed(cache, **auto)
    return train_files, test_files, raw, auto


def pooled(results):
    n = sum(r["n_truth"] for r in results)
    above = sum(r["percent_f_above"] * r["n_truth"] / 100 for r in results)
    tp, fp, fn = (sum(r[k] for r in results) for k in ("tp", "fp", "fn"))
    return {"nuclei": n, "percent_f_above_0.6": 100 * above / n, "f1_iou0.5": 2 * tp / (2 * tp + fp + fn),
            "median_image_percent": float(np.median([r["percent_f_above"] for r in results]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--head", default="2class", choices=["2class", "3class"])
    ap.add_argument("--labels", default="automatic", choices=["automatic", "manual"],
                    help="train on the automatic labels (the paper's claim) or on the manual masks (the price of automatic labels)")
    ap.add_argument("--preset", default="fast", choices=["fast", "paper"])
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--crop-size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--learning-rate", type=float)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--n-train", type=int, default=70)
    ap.add_argument("--n-test", type=int, default=None, help="score only the first N test images (default: all the others; a quick check)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=None, help="instance threshold (default: the model's calibrated one)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_files, test_files, raw, auto = load_split(args.data, args.n_train, args.seed, args.out.parent / "bbbc039_auto_labels.npz")
    t_gt = time.perf_counter() - t0
    test_files = test_files[: args.n_test] if args.n_test else test_files
    print(f"automatic labels for {len(raw)} images: {t_gt:.1f} s; train {len(train_files)}, test {len(test_files)}")

    cfg = ExperimentConfig(name="bbbc039-nuclei-from-nuclei", root=str(args.data), pattern="",
                           objects="nuclei", channels=ChannelsConfig(input=["Hoechst"], nuclei="Hoechst"),
                           model=ModelConfig(head=args.head),
                           train=TrainConfig(preset=args.preset, iterations=args.iterations, crop_size=args.crop_size,
                                             batch_size=args.batch_size, learning_rate=args.learning_rate,
                                             max_minutes=args.max_minutes, seed=args.seed))
    images = [raw[p] for p in train_files]  # raw: the model prepares them (Model.prepare), as it will the test images
    if args.labels == "manual":
        labels = [read_labels(args.data / "masks" / (p.stem + ".png")) for p in train_files]
    else:
        labels = [auto[p.stem] for p in train_files]
    cfg.segment.device = "cpu"
    t1 = time.perf_counter()
    fitted = fit_model(images, labels, cfg, args.out / "model", input_channels=["Hoechst"], progress=True)
    t_train = time.perf_counter() - t1
    if fitted is None:
        raise SystemExit("training stopped before the end; no model was written")
    model = Model.load(args.out / "model", device="cpu")
    info = model.info

    net: dict = {"model": [], 1: [], 3: []}
    ref = []
    t2 = time.perf_counter()
    for p in test_files:
        truth = read_labels(args.data / "masks" / (p.stem + ".png"))
        prob, _ = model.predict_prepared(model.prepare(raw[p], p))
        for dil in net:
            options = model.instance_options(threshold=args.threshold, dilation=None if dil == "model" else dil)
            net[dil].append(evaluate_pair(truth, probability_to_labels(prob, **options)))
        ref.append(evaluate_pair(truth, auto[p.stem]))
    t_test = time.perf_counter() - t2
    history = model.history
    result = {
        "command": " ".join(sys.argv), "trained_on": args.labels, "head": args.head, "preset": args.preset, "threads": torch.get_num_threads(),
        "train_seconds": round(t_train, 1), "loop_seconds": info.get("train_seconds"), "iterations_run": info["iterations_run"],
        "best_val_score": info["best_val_score"], "stopped_early": info["stopped_early"],
        "bfloat16": info["bfloat16"], "schedule": info["schedule"],
        "foreground_factor": info["foreground_factor"], "normalization": model.preprocessing.normalization,
        "illumination": model.preprocessing.illumination, "calibration": info.get("calibration"),
        "model_instance_settings": model.instance_options(threshold=args.threshold),
        "test_images": len(test_files), "test_seconds": round(t_test, 1),
        "network_vs_manual_model_settings": pooled(net["model"]),
        "network_vs_manual_dilation1": pooled(net[1]), "network_vs_manual_dilation3": pooled(net[3]),
        "automatic_labels_vs_manual": pooled(ref),
        "final_loss": float(history[-1]["loss"]) if history else None,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
