"""Whole cells from a nuclear stain + phase contrast, scored against manual whole-cell masks.

For each deepcell field (Van Valen et al. 2016; research use only, not bundled) the automatic
labels are made exactly as ``stainseg groundtruth`` makes them for ``objects = "cells"`` without a
cytoplasm channel: nuclei from the nuclear stain, cell extent from the phase image
(:func:`stainseg.groundtruth.extent.cells_from_nuclei`). Prints, per field, the number of manual
and automatic cells, the percentage of manual cells with per-object F >= 0.6 and the F1 of
one-to-one matches at IoU 0.5. HeLa s2-s5 chose the method; the other fields are held out. Run:

    .venv/bin/python benchmarks/cells_from_nuclei.py [--data ../shared/data/deepcell]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stainseg.config import GroundTruthConfig
from stainseg.evaluate.matching import match_iou, object_fscores, overlap_table, percent_above
from stainseg.groundtruth import groundtruth_for_set
from stainseg.io.images import read_image, read_labels

TUNED = ["HeLa_s2", "HeLa_s3", "HeLa_s4", "HeLa_s5"]
HELD_OUT = ["HeLa_s6", "HeLa_s7", "3T3_s1", "BMDM_s1", "MCF10A_s2"]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepcell"


def score_field(folder: Path, name: str, cfg: GroundTruthConfig | None = None) -> dict[str, float]:
    """Automatic cells of one deepcell field and their scores against its manual cells."""
    nuclear = read_image(folder / "images" / f"{name}_nuclear.tif")
    phase = read_image(folder / "images" / f"{name}_phase.tif")
    manual = read_labels(folder / "masks_cells" / f"{name}.tif").astype(np.int32)
    labels, _, _ = groundtruth_for_set({"nuclear": nuclear}, "nuclear", None, "cells", cfg, label_free=phase[None])
    table = overlap_table(manual, labels)
    iou = match_iou(table, thresholds=[0.5])
    return {"n_manual": int(iou["n_truth"]), "n_auto": int(iou["n_pred"]),
            "f06": percent_above(object_fscores(table), 0.6), "f1": float(iou["f1"][0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the deepcell folder (images/, masks_cells/)")
    args = parser.parse_args()
    if not (args.data / "masks_cells").is_dir():
        raise SystemExit(f"{args.data} has no masks_cells/: pass --data pointing at the deepcell folder")
    print(f"{'field':<11} {'set':<9} {'manual':>6} {'auto':>5} {'%F>=0.6':>8} {'F1@0.5':>7} {'s':>5}")
    groups: dict[str, list[dict[str, float]]] = {"tuned": [], "held-out": []}
    for names, group in ((TUNED, "tuned"), (HELD_OUT, "held-out")):
        for name in names:
            t0 = time.perf_counter()
            r = score_field(args.data, name)
            groups[group].append(r)
            print(f"{name:<11} {group:<9} {r['n_manual']:>6} {r['n_auto']:>5} {r['f06']:>8.1f} {r['f1']:>7.3f} "
                  f"{time.perf_counter() - t0:>5.1f}", flush=True)
    for group, rows in groups.items():
        print(f"{'mean':<11} {group:<9} {'':>6} {'':>5} {np.mean([r['f06'] for r in rows]):>8.1f} "
              f"{np.mean([r['f1'] for r in rows]):>7.3f}")


if __name__ == "__main__":
    main()
