"""Time Cellpose 3 (its CPnet, random weights, CPU) on one image; print one JSON line.

Called by ``segment_speed.py`` with the interpreter of an environment that has cellpose (it is
not a dependency of stainseg: ``pip install 'cellpose<4'`` pins numpy 2.0 through numba, so keep
it in its own venv). Weights cannot be downloaded here, so the network is built with random
weights: the network's time does not depend on them. ``eval`` is timed without and with mask
reconstruction (the flow dynamics); with random weights the flows are meaningless, so the second
figure is a lower bound of what a trained model costs.

    CELLPOSE_PY benchmarks/cellpose_time.py IMAGE.tif [--repeat N] [--diameter D] [--flows-from LABELS.tif]

``--flows-from LABELS.tif`` also times Cellpose's mask step (its flow dynamics, the very call ``eval``
makes after the network) on the flows a perfectly trained network would output for those objects:
Cellpose's own training targets (``dynamics.masks_to_flows``) with a confident cell probability.
``eval_trained_estimate_s`` = ``eval_no_masks_s`` + that mask step: what a trained model costs,
without downloading its weights.
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
    ap.add_argument("--flows-from", default=None, help="instance labels of the image: time the mask step on their ideal flows")
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
    trained: dict = {}
    if args.flows_from:
        from cellpose import dynamics

        truth = tifffile.imread(args.flows_from).astype(np.int32)
        flows = dynamics.masks_to_flows(truth)  # (2, Y, X): what Cellpose trains its network to output
        cellprob = np.where(truth > 0, 5.0, -5.0).astype(np.float32)
        steps = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            found = dynamics.resize_and_compute_masks((flows * 5.0).astype(np.float32), cellprob, niter=200, cellprob_threshold=0.0,
                                                      flow_threshold=0.4, interp=True, min_size=15,
                                                      max_size_fraction=0.4, device=torch.device("cpu"))
            steps.append(time.perf_counter() - t0)
        trained = {"mask_step_ideal_flows_s": round(min(steps), 3), "objects_given": int(truth.max()),
                   "objects_from_ideal_flows": int(np.max(found)),
                   "eval_trained_estimate_s": round(min(times["eval_no_masks_s"]) + min(steps), 3)}
    from importlib.metadata import version

    print(json.dumps({"cellpose": version("cellpose"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "shape": list(image.shape),
                      **{k: round(min(v), 3) for k, v in times.items()}, "objects": int(np.max(masks)), **trained}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
