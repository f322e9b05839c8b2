"""Messy plates: blank fields, dimmer exposures and the cost of the quality checks, with a trained model.

Usage::

    stainseg run examples/bbbc039.toml -o RUN            # trains on 70 images, holds out 30
    python benchmarks/plate_quality.py RUN/model --images ../shared/data/bbbc039/images \\
        --masks ../shared/data/bbbc039/masks --held-out RUN/groundtruth/index.csv

Prints, for the held-out fields (scored against their manual masks):
- pooled F1 @ IoU 0.5 and % F >= 0.6, without and with blank fields added (the plate's own empty
  fields, and background-only fields made by tiling nucleus-free 32 px patches of held-out images,
  one per 10 fields; their tile seams are steps of the background level, so they are harder than a
  real empty well);
- objects found on each blank field and whether it was flagged;
- F1 between the labels of each field and of its 10x dimmer copy;
- the time of ``model.run`` with and without the checks (ratio, best of 3), stating the CPU.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

import stainseg
from stainseg.evaluate.batch import evaluate_arrays
from stainseg.io.images import read_labels


def blank_field(images: list[np.ndarray], masks: list[np.ndarray], shape: tuple[int, int], seed: int) -> np.ndarray:
    """A field of real camera background: nucleus-free pixels (15 px from any nucleus) of held-out images, in 32 px tiles."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, images[0].dtype)
    for y in range(0, shape[0], 32):
        for x in range(0, shape[1], 32):
            for _ in range(200):
                k = int(rng.integers(len(images)))
                free = ~ndi.binary_dilation(masks[k] > 0, iterations=15)
                yy, xx = int(rng.integers(0, shape[0] - 32)), int(rng.integers(0, shape[1] - 32))
                if free[yy:yy + 32, xx:xx + 32].all():
                    h, w = min(32, shape[0] - y), min(32, shape[1] - x)
                    out[y:y + h, x:x + w] = images[k][yy:yy + h, xx:xx + w]
                    break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--masks", type=Path, required=True)
    ap.add_argument("--held-out", type=Path, required=True, help="groundtruth index.csv with a split column")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    model = stainseg.Model.load(a.model)
    rows = list(csv.DictReader(open(a.held_out)))
    test = {Path(r["sources"].split(";")[0]).stem for r in rows if r.get("split") == "test"}
    paths = {p.stem: p for p in a.images.iterdir()}
    names = [n for n in sorted(paths) if n in test and (a.masks / f"{n}.png").exists()]
    images = [tifffile.imread(paths[n]) for n in names]
    masks = [read_labels(a.masks / f"{n}.png") for n in names]
    print(f"model {a.model}; {len(names)} held-out fields; CPU {platform.processor() or platform.machine()}")

    preds = [model.run(im) for im in images]
    pairs = {n: (m, r["labels"]) for n, m, r in zip(names, masks, preds)}
    base = evaluate_arrays(pairs)["overall"]
    print(f"held-out fields vs manual: F1 {base['f1']:.3f}, % F>=0.6 {base['percent_f_above']:.1f}, "
          f"flagged {sum(bool(r['flags']) for r in preds)} of {len(preds)}")

    empty = [n for n in sorted(paths) if (a.masks / f"{n}.png").exists() and not read_labels(a.masks / f"{n}.png").any()]
    n_blank = max(1, len(images) // 10)
    blanks = [tifffile.imread(paths[n]) for n in empty]  # the plate's own empty fields (training leaves them out: no labels)
    print(f"the plate's empty fields (manual mask empty): {', '.join(empty) or 'none'}")
    blanks += [blank_field(images, masks, images[0].shape, seed) for seed in range(n_blank)]
    with_blank = dict(pairs)
    for i, b in enumerate(blanks):
        r = model.run(b)
        with_blank[f"blank{i}"] = (np.zeros(b.shape, np.int32), r["labels"])
        print(f"blank field {i}: {int(r['labels'].max())} objects, flags {[f.code for f in r['flags']]}")
    ov = evaluate_arrays(with_blank)["overall"]
    print(f"with {len(blanks)} blank fields ({len(empty)} real, {n_blank} tiled from background): "
          f"F1 {ov['f1']:.3f}, % F>=0.6 {ov['percent_f_above']:.1f}")
    old = stainseg.Model.load(a.model)
    old.preprocessing.normalization = "image"
    for i, b in enumerate(blanks):
        print(f"  (per-image normalisation of 0.1 on blank field {i}: {int(old.segment(b).max())} objects)")

    f1 = []
    for im, r in zip(images, preds):
        dim = model.segment((im / 10.0).astype(np.float32))
        f1.append(stainseg.evaluate(r["labels"], dim)["f1"])
    print(f"10x dimmer copy vs original labels: F1 min {min(f1):.3f}, median {np.median(f1):.3f}")

    im = images[0]
    times = {True: [], False: []}
    for _ in range(a.repeat):
        for check in (False, True):
            t0 = time.perf_counter()
            model.run(im, check=check)
            times[check].append(time.perf_counter() - t0)
    on, off = min(times[True]), min(times[False])
    print(f"model.run on {im.shape}: {off:.3f} s without checks, {on:.3f} s with (ratio {on / off:.3f}, best of {a.repeat})")


if __name__ == "__main__":
    main()
