"""Choose the post-segmentation dilation from the data (METHOD 5.4 made automatic).

The paper dilates every label by a fixed 9 × 9 (cells) or 3 × 3 (nuclei) because its network
under-estimated cell extent. How much a network under-estimates depends on the labels and the
training, so after training we segment the held-out validation images at several dilations, score
each against their automatic labels, and keep the best (as nnU-Net derives settings from data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stainseg.io.atomic import write_json

CANDIDATES = (1, 3, 5, 7, 9, 11, 13)


def score_dilations(probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], options: Mapping[str, Any],
                    candidates: Sequence[int] = CANDIDATES) -> dict[int, dict[str, float]]:
    """Pooled % F >= 0.6 and F1@IoU0.5 against ``labels`` for every candidate dilation.

    ``options`` are the other keyword arguments of ``probability_to_labels`` (``SegmentConfig.instance_options()``).
    """
    from stainseg.evaluate.stage import evaluate_arrays
    from stainseg.segment.instances import probability_to_labels

    scores = {}
    for d in candidates:
        pairs = {str(i): (lab, probability_to_labels(p, dilation=d, **options))
                 for i, (p, lab) in enumerate(zip(probabilities, labels))}
        overall = evaluate_arrays(pairs)["overall"]
        scores[int(d)] = {"percent_f_above": float(overall["percent_f_above"]), "f1": float(overall["f1"])}
    return scores


def best_dilation(scores: dict[int, dict[str, float]]) -> int:
    """The dilation with the best mean of F1@IoU0.5 and the fraction with F >= 0.6 (smaller on ties)."""
    return min(scores, key=lambda d: (-(scores[d]["f1"] + scores[d]["percent_f_above"] / 100.0), d))


def calibrate_dilation(model_dir: str | Path, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, Any]:
    """Score candidate dilations on (prepared image, automatic labels) pairs; store the best in the model dir.

    ``config.toml`` gets ``segment.dilation`` and ``model.json`` its ``dilation`` and the scores, so that
    `stainseg segment` uses it. Returns the calibration record.
    """
    import json

    from stainseg.config import save_config
    from stainseg.modeldir import load_model
    from stainseg.segment.predictor import TorchPredictor
    from stainseg.segment.tiling import predict_tiled

    model_dir = Path(model_dir)
    model, cfg, meta = load_model(model_dir)
    predictor = TorchPredictor(model, device=cfg.segment.device, bfloat16=cfg.segment.bfloat16)
    probs = [predict_tiled(im, predictor, tile_size=cfg.segment.tile_size, two_pass=cfg.segment.two_pass,
                           batch_size=cfg.segment.batch_size, uncertainty=False)[0] for im in images]
    scores = score_dilations(probs, labels, cfg.segment.instance_options())
    best = best_dilation(scores)
    record = {"dilation": best, "paper_default": 9 if cfg.objects == "cells" else 3, "images": len(images),
              "scores": {str(d): s for d, s in scores.items()}}
    cfg.segment.dilation = best
    save_config(cfg, model_dir / "config.toml")
    meta = json.loads((model_dir / "model.json").read_text())
    meta["dilation"] = best
    meta["dilation_calibration"] = record
    write_json(model_dir / "model.json", meta)
    return record
