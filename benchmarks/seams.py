"""Does the segmentation depend on where the tile borders fall? (issue: seams; METHOD 5.2)

Each real image is segmented as it is and shifted by (dy, dx) px, then the shift is undone and the
two label images are compared: F1 at IoU 0.5, pooled over all given images. The shifted image is
the original moved down and right on a canvas grown by (dy, dx) (mirror-filled), so every cell is
in both images with the same surroundings; only the tile borders (and the network's 8-px pooling
grid) fall elsewhere. Objects that touch the image border in either segmentation are left out
of both. A model with a working scale (``downsample = f > 1``) is moved by (dy, dx) px of the input,
not of the working scale: the image is prepared at full resolution, moved, then reduced, and its
objects are drawn at full resolution (``stainseg.segment.upscale``), as ``Model.segment`` gives them.

The F1 is pooled over all images (every object of every image counts once), then given per image.
Rows: the default two-pass tiling; single-pass tiling; two-pass with the second pass shifted by
``tile/2 + 4`` px (its pooling grid then differs from the first pass's by half a cell); whole-image
inference (no tiles at all: what is left there comes from the network, not from tiling); and
``tiling = "overlap"`` (one pass of large tiles blended across a narrow overlap) with tiles small
enough to cut a BBBC039 field. With
``--crop``, the shifted image is instead the original cropped by (dy, dx), as in earlier versions of
this script: there, cells near the cut lose the context on one side.

    .venv/bin/python benchmarks/seams.py MODEL IMAGE [IMAGE ...] [--shift 37 91] [--crop]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from stainseg.evaluate.matching import overlap_table
from stainseg.io.images import read_image
from stainseg.model import Model
from stainseg.preprocess import prepare
from stainseg.scale import downsample_planes
from stainseg.segment.tiling import predict_overlap, predict_tiled
from stainseg.segment.upscale import instance_labels

MODES = ("two-pass", "single-pass", "two-pass, offset t/2 + 4", "whole image")
# ``tiling = "overlap"`` (stainseg's default) with tiles small enough that a BBBC039 field (520 x 696) is cut:
# (largest tile side, overlap); on a 2048² image the default is (1152, 96)
OVERLAP_MODES = {"overlap 384 / 96": (384, 96), "overlap 384 / 48": (384, 48), "overlap 256 / 32": (256, 32)}


def border_labels(labels: np.ndarray) -> set[int]:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


def compare(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """(TP, FP, FN) at IoU 0.5 of b against a, leaving out objects that touch the border in either."""
    table = overlap_table(a, b)
    good = table.pair_iou() > 0.5  # above 0.5 a match is necessarily one to one
    pairs = list(zip(table.truth_labels[table.pair_truth[good]].tolist(), table.pred_labels[table.pair_pred[good]].tolist()))
    drop_a, drop_b = border_labels(a), border_labels(b)
    for la, lb in pairs:
        if la in drop_a or lb in drop_b:
            drop_a.add(la)
            drop_b.add(lb)
    kept_pairs = [(la, lb) for la, lb in pairs if la not in drop_a]
    n_a = len(set(np.unique(a[a > 0]).tolist()) - drop_a)
    n_b = len(set(np.unique(b[b > 0]).tolist()) - drop_b)
    tp = len(kept_pairs)
    return tp, n_b - tp, n_a - tp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--shift", type=int, nargs=2, default=(37, 91))
    ap.add_argument("--crop", action="store_true", help="shift by cropping instead of growing the canvas")
    ap.add_argument("--float32", action="store_true", help="float32 inference even where bfloat16 is native")
    ap.add_argument("--engine", choices=["auto", "torch", "onnx"], default=None, help="inference engine (default: the model's)")
    args = ap.parse_args()
    model = Model.load(args.model, device="cpu", engine=args.engine)
    model.segment_settings.bfloat16 = model.segment_settings.bfloat16 and not args.float32
    predictor = model.predictor()
    dy, dx = args.shift
    t = model.segment_settings.tile_size
    factor = int(model.preprocessing.downsample)
    full_resolution = dataclasses.replace(model.preprocessing, downsample=1)

    def labels(full: np.ndarray, mode: str) -> np.ndarray:
        img = downsample_planes(full, factor)
        if mode == "whole image":
            prob = predictor(img[None])[0]
        elif mode in OVERLAP_MODES:
            side, overlap = OVERLAP_MODES[mode]
            prob = predict_overlap(img, predictor, tile_size=side, overlap=overlap)
        elif "offset" in mode:  # the model's own tiling has no offset setting: the same call with one
            prob, _ = predict_tiled(img, predictor, tile_size=t, two_pass=True, batch_size=model.segment_settings.batch_size,
                                    uncertainty=False, offset=t // 2 + 4)
        else:
            prob, _ = model.predict_prepared(img, tiling="tiles", two_pass=mode != "single-pass")
        return instance_labels(prob, model.instance_options(), factor, full.shape)

    modes = MODES + tuple(OVERLAP_MODES)
    counts = {mode: np.zeros(3, int) for mode in modes}
    per_image: dict[str, list[float]] = {mode: [] for mode in modes}
    start = time.perf_counter()
    for path in args.images:
        x = prepare(model.arrange(read_image(path), path), full_resolution)
        if args.crop:
            moved, undo = x[:, dy:, dx:], (slice(dy, None), slice(dx, None))
        else:
            moved, undo = np.pad(x, ((0, 0), (dy, 0), (dx, 0)), mode="reflect"), (slice(None), slice(None))
        for mode in modes:
            base = labels(x, mode)
            shifted = labels(moved, mode)
            shifted = shifted if args.crop else shifted[dy:, dx:]
            tp, fp, fn = compare(base[undo], shifted)
            counts[mode] += (tp, fp, fn)
            per_image[mode].append(2 * tp / max(2 * tp + fp + fn, 1))
    how = "cropped by" if args.crop else "moved by"
    scale = f", working scale 1/{factor}" if factor > 1 else ""
    print(f"{len(args.images)} images {how} ({dy}, {dx}) px{scale}, tiles {t}, {predictor.describe()}; {time.perf_counter() - start:.0f} s")
    for mode, (tp, fp, fn) in counts.items():
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        each = np.asarray(per_image[mode])
        print(f"  {mode:26s} F1@IoU0.5 {f1:.4f}  ({tp} matched, {fp + fn} unmatched of {tp + fn} objects); per image: "
              f"min {each.min():.4f}, median {np.median(each):.4f}, {int((each >= 0.995).sum())} of {each.size} at >= 0.995")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
