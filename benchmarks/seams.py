"""Does the segmentation depend on where the tile borders fall? (issue: seams; METHOD 5.2)

Segments a real image, and the same image shifted by (dy, dx) px (a crop that moves every tile border),
undoes the shift and compares the two label images on their common area: F1 at IoU 0.5 between them
(objects touching the common area's border are left out of both). The input is prepared once. Rows:
tiled vs whole-image inference on the same pixels (pure tiling effect); the requested shift and the
nearest shift by multiples of 8 (the network's pooling grid), each for two-pass, single-pass and whole
image: a difference that the whole image shows too comes from the network, not from the tiles.

    .venv/bin/python benchmarks/seams.py MODEL IMAGE [--shift 37 91]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.segmentation import clear_border

from stainseg.evaluate.summary import evaluate_pair
from stainseg.io.images import as_float, read_image
from stainseg.modeldir import load_model
from stainseg.preprocess import prepare_input
from stainseg.segment.instances import probability_to_labels
from stainseg.segment.predictor import TorchPredictor
from stainseg.segment.stage import as_channels_first
from stainseg.segment.tiling import predict_tiled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("--shift", type=int, nargs=2, default=(37, 91))
    args = ap.parse_args()
    model, cfg, meta = load_model(args.model)
    predictor = TorchPredictor(model, device="cpu", bfloat16=cfg.segment.bfloat16)
    x = prepare_input(as_channels_first(as_float(read_image(args.image)), int(meta["in_channels"]), args.image), cfg)
    dy, dx = args.shift

    def labels(img: np.ndarray, mode: str) -> np.ndarray:
        if mode == "whole":
            import torch

            with torch.inference_mode():
                prob = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(img))[None]).float(), 1)[0].numpy()
        else:
            prob, _ = predict_tiled(img, predictor, tile_size=cfg.segment.tile_size, two_pass=mode == "two-pass",
                                    batch_size=cfg.segment.batch_size, uncertainty=False)
        return probability_to_labels(prob, threshold=cfg.segment.threshold, min_size=cfg.segment.min_size, dilation=cfg.dilation())

    def compare(a: np.ndarray, b: np.ndarray) -> str:
        s = evaluate_pair(clear_border(a), clear_border(b))
        return f"F1@IoU0.5 {s['f1']:.4f} over {s['n_truth']} objects"

    base = {mode: labels(x, mode) for mode in ("two-pass", "single", "whole")}
    print(f"tiled two-pass vs whole image, same pixels: {compare(base['whole'], base['two-pass'])}")
    print(f"tiled single pass vs whole image:           {compare(base['whole'], base['single'])}")
    for sy, sx in ((dy, dx), (8 * round(dy / 8), 8 * round(dx / 8))):
        for mode in ("two-pass", "single", "whole"):
            shifted = labels(x[:, sy:, sx:], mode)
            print(f"shift ({sy:3d}, {sx:3d}) {mode:9s}: {compare(base[mode][sy:, sx:], shifted)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
