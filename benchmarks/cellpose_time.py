"""Time Cellpose 3 (its CPnet, random weights, CPU) on one image; print one JSON line.

Called by ``segment_speed.py`` with the interpreter of an environment that has cellpose (it is
not a dependency of stainseg: ``pip install 'cellpose<4'`` pins numpy 2.0 through numba, so keep
it in its own venv). Weights cannot be downloaded here, so the network is built with random
weights: the network's time does not depend on them. ``eval`` is timed without and with mask
reconstruction (the flow dynamics); with random weights the flows are meaningless, so the second
figure is a lower bound of what a trained model costs.

    CELLPOSE_PY benchmarks/cellpose_time.py IMAGE.tif [--repeat N] [--diameter D]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--diameter", type=float, default=30.0, help="cell diameter in px (30: Cellpose's own scale, no resizing)")
    args = ap.parse_args()

    import numpy as np
    import tifffile
    import torch

    torch.manual_seed(0)
    from cellpose import models

    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None)  # random CPnet, nothing downloaded
    image = tifffile.imread(args.image)
    if image.ndim == 3:  # (C, Y, X) as stainseg writes it → Cellpose's (Y, X, C)
        image = np.moveaxis(image, 0, -1)
    times = {"eval_no_masks_s": [], "eval_with_masks_s": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        model.eval(image, diameter=args.diameter, channels=[0, 0], compute_masks=False)
        t1 = time.perf_counter()
        masks = model.eval(image, diameter=args.diameter, channels=[0, 0], compute_masks=True)[0]
        t2 = time.perf_counter()
        times["eval_no_masks_s"].append(t1 - t0)
        times["eval_with_masks_s"].append(t2 - t1)
    from importlib.metadata import version

    print(json.dumps({"cellpose": version("cellpose"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "shape": list(image.shape),
                      **{k: round(min(v), 3) for k, v in times.items()}, "objects": int(np.max(masks))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
