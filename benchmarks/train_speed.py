"""Train on AUTOMATIC labels only, test against MANUAL masks (BBBC039, scenario "nuclei from nuclei").

The paper's central claim on the one public set with manual masks: ~70 BBBC039 Hoechst images get
automatic labels (stainseg.groundtruth.nuclei.segment_nuclei: Otsu + distance watershed), the
network learns them from the Hoechst image itself, and the other 30 images are segmented and
scored against their manual masks. Acceptance: >= 90 % of nuclei with F >= 0.6, F1 at IoU 0.5
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
from stainseg.modeldir import load_model
from stainseg.preprocess import normalize
from stainseg.segment.instances import probability_to_labels
from stainseg.train.loop import train
from stainseg.network import probabilities

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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_files, test_files, raw, auto = load_split(args.data, args.n_train, args.seed, args.out.parent / "bbbc039_auto_labels.npz")
    t_gt = time.perf_counter() - t0
    print(f"automatic labels for {len(raw)} images: {t_gt:.1f} s; train {len(train_files)}, test {len(test_files)}")

    cfg = ExperimentConfig(name="bbbc039-nuclei-from-nuclei", root=str(args.data), pattern="",
                           objects="nuclei", channels=ChannelsConfig(input=["Hoechst"], nuclei="Hoechst"),
                           model=ModelConfig(head=args.head),
                           train=TrainConfig(preset=args.preset, iterations=args.iterations, crop_size=args.crop_size,
                                             batch_size=args.batch_size, learning_rate=args.learning_rate,
                                             max_minutes=args.max_minutes, seed=args.seed))
    images = [normalize(raw[p][None]) for p in train_files]
    if args.labels == "manual":
        labels = [read_labels(args.data / "masks" / (p.stem + ".png")) for p in train_files]
    else:
        labels = [auto[p.stem] for p in train_files]
    t1 = time.perf_counter()
    history = train(images, labels, cfg, args.out / "model", progress=True)
    t_train = time.perf_counter() - t1
    model, cfg, meta = load_model(args.out / "model")

    net, ref = {1: [], 3: []}, []
    t2 = time.perf_counter()
    for p in test_files:
        truth = read_labels(args.data / "masks" / (p.stem + ".png"))
        with torch.no_grad():
            prob = probabilities(model(torch.from_numpy(normalize(raw[p][None]))[None]))[0].numpy()
        for dil in net:
            net[dil].append(evaluate_pair(truth, probability_to_labels(prob, threshold=args.threshold, dilation=dil)))
        ref.append(evaluate_pair(truth, auto[p.stem]))
    t_test = time.perf_counter() - t2
    result = {
        "command": " ".join(sys.argv), "trained_on": args.labels, "head": args.head, "preset": args.preset, "threads": torch.get_num_threads(),
        "train_seconds": round(t_train, 1), "iterations_run": meta["training"]["iterations_run"],
        "best_val_score": meta["training"]["best_val_score"], "stopped_early": meta["training"]["stopped_early"],
        "bfloat16": meta["training"]["bfloat16"], "schedule": meta["training"]["schedule"],
        "foreground_factor": meta["training"]["foreground_factor"],
        "test_seconds_30_images": round(t_test, 1),
        "network_vs_manual_dilation1": pooled(net[1]), "network_vs_manual_dilation3": pooled(net[3]),
        "automatic_labels_vs_manual": pooled(ref),
        "final_loss": history[-1]["loss"] if history else None,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
