"""Scenario A on real data: nuclei from a bright-field z-stack (sephace Set1), labels from DAPI.

One field only, so it is split in two: the model trains on the raw left part (labels made
automatically from fl.tif; :func:`stainseg.train.fit.fit_model`, which prepares it with
``Model.prepare`` and calibrates the instance settings on a held-out strip of that part) and is
scored on the right part, which it never saw, against the automatic labels there. The whole field
is run through ``Model.predict_probability`` (as ``stainseg segment`` would). Scores: with the
model's own (calibrated) settings, and by dilation with its other settings. Writes a preview PNG of
the test part (bright-field, automatic labels, network) and prints the scores.

    .venv/bin/python benchmarks/sephace_split.py [--iterations 600] [-o OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage.segmentation import clear_border

from stainseg.config import load_config
from stainseg.evaluate.summary import evaluate_pair
from stainseg.groundtruth import groundtruth_for_set
from stainseg.io.layout import scan
from stainseg.model import Model
from stainseg.report.figures import overlay_panel
from stainseg.segment.instances import probability_to_labels
from stainseg.train.fit import fit_model

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", type=Path, default=REPO / "examples" / "sephace.toml")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--train-fraction", type=float, default=0.6)
    ap.add_argument("-o", "--out", type=Path, default=Path("out/sephace"))
    args = ap.parse_args()
    cfg = load_config(args.experiment)
    (iset,) = scan(cfg).image_sets
    labels, qc, _ = groundtruth_for_set({"fl": iset.load("fl")}, "fl", None, "nuclei", cfg.groundtruth)
    raw = iset.load_stack(cfg.channels.input or ["fine"])
    planes = [f"{ch}[z={z}]" if z else ch for ch in (cfg.channels.input or ["fine"]) for z in iset.z_values.get(ch, [""])]
    cut = int(args.train_fraction * raw.shape[-1]) // 8 * 8
    cfg.train.iterations = args.iterations
    cfg.segment.device = "cpu"
    t0 = time.time()
    fit_model([raw[:, :, :cut]], [labels[:, :cut]], cfg, args.out / "model", plane_names=planes, progress=False)
    seconds = time.time() - t0
    model = Model.load(args.out / "model", device="cpu")
    prob = model.predict_probability(raw)
    test = np.s_[:, cut + 16:]  # 16 px away from the training part

    def score(pred: np.ndarray) -> dict:
        s = evaluate_pair(clear_border(labels[test]), clear_border(pred[test]))
        return {"percent_f_above_0.6": round(s["percent_f_above"], 1), "f1_iou0.5": round(s["f1"], 3), "nuclei": s["n_truth"]}

    scores = {d: score(probability_to_labels(prob, **model.instance_options(dilation=d))) for d in (1, 3, 5, 9)}
    best = model.dilation  # calibrated on the held-out strip of the training part: chosen before looking at the test part
    pred = probability_to_labels(prob, **model.instance_options())
    bf = iset.load("fine")[1]
    png = overlay_panel([("automatic labels (DAPI)", bf[test], labels[test]), (f"network from bright-field (dilation {best})", bf[test], pred[test])],
                        "sephace Set1, held-out right part: bright-field (in-focus plane)")
    (args.out / "preview.png").write_bytes(png)
    result = {"headline_dilation": best, "headline_settings": model.instance_options(), "headline": score(pred),
              "normalization": model.preprocessing.normalization, "train_seconds": round(seconds, 1), "iterations": args.iterations, "train_columns": cut,
              "automatic_label_objects": int(labels.max()), "scores_by_dilation": scores, "preview": str(args.out / "preview.png")}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
