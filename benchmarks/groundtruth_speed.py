"""Time the automatic ground truth for one 2048 x 2048 image set (2 stains x 3 z, objects = "cells").

Target (METHOD.md / paper: 6 s per 2034 x 2034 image including everything): <= 5 s on this machine.
Prints the time of each stage and the ratio to the target. Run:

    .venv/bin/python benchmarks/groundtruth_speed.py [--repeats 3] [--size 2048]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage as ndi

from stainseg.config import GroundTruthConfig
from stainseg.groundtruth import groundtruth_for_set
from stainseg.groundtruth.cells import segment_cells
from stainseg.groundtruth.nuclei import segment_nuclei
from stainseg.groundtruth.pipeline import correct_stain

TARGET_S = 5.0


def synthetic_set(size: int = 2048, z: int = 3, spacing: int = 60, seed: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """Nuclear + cytoplasm z-stacks of about (size / spacing)^2 touching cells, with a 2.5x illumination gradient."""
    rng = np.random.default_rng(seed)
    grid = np.arange(spacing // 2, size, spacing)
    cy, cx = np.meshgrid(grid, grid, indexing="ij")
    centres = np.stack([cy.ravel(), cx.ravel()], 1) + rng.integers(-spacing // 5, spacing // 5 + 1, (cy.size, 2))
    centres = np.clip(centres, 0, size - 1)
    seeds = np.ones((size, size), bool)
    seeds[centres[:, 0], centres[:, 1]] = False
    dist, (iy, ix) = ndi.distance_transform_edt(seeds, return_indices=True)
    owner = np.zeros((size, size), np.int32)
    owner[centres[:, 0], centres[:, 1]] = np.arange(len(centres))
    owner = owner[iy, ix]
    r_nuc = rng.uniform(9, 14, len(centres))[owner]
    r_cell = rng.uniform(22, 32, len(centres))[owner]
    nucleus = (dist <= r_nuc) * rng.uniform(0.6, 1.4, len(centres))[owner]
    cell = (dist <= r_cell) * rng.uniform(0.5, 1.5, len(centres))[owner]
    boundary = ndi.morphological_gradient(owner, size=3) > 0  # dim lines where cells touch
    cell[boundary] *= 0.4
    yy, xx = np.mgrid[0:size, 0:size] / size
    illumination = 1 + 1.5 * (yy + xx) / 2
    stains = {}
    for name, clean, level, noise in (("dna", nucleus, 800, 8), ("body", cell, 300, 6)):
        clean = ndi.gaussian_filter(clean.astype(np.float32), 1.5) * level + 100
        stains[name] = np.stack([((clean + rng.normal(0, noise, clean.shape)) * illumination).astype(np.uint16)
                                 for _ in range(z)])
    return stains, len(centres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    stains, n_true = synthetic_set(args.size)
    cfg = GroundTruthConfig()
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        labels, qc, _ = groundtruth_for_set(stains, "dna", "body", "cells", cfg)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    # stage breakdown (one run)
    t0 = time.perf_counter()
    dna = correct_stain(stains["dna"].astype(np.float32), cfg)
    body = correct_stain(stains["body"].astype(np.float32), cfg)
    t1 = time.perf_counter()
    nuclei = segment_nuclei(dna)
    t2 = time.perf_counter()
    segment_cells(body, nuclei, cfg.cytoplasm_dilation)
    t3 = time.perf_counter()
    best, median = min(times), float(np.median(times))
    print(f"image set: 2 stains x {stains['dna'].shape[0]} z x {args.size} x {args.size}, {n_true} synthetic cells; "
          f"found {qc['n_objects']} cells ({qc['n_nuclei']} nuclei)")
    print(f"stages: illumination + projection {t1 - t0:.2f} s, nuclei {t2 - t1:.2f} s, cells {t3 - t2:.2f} s")
    print(f"groundtruth_for_set: best {best:.2f} s, median {median:.2f} s of {args.repeats} (wall); "
          f"CPU time median {float(np.median(cpu)):.2f} s (the wall time on an idle machine, as the work is single-threaded)")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"ratio to the {TARGET_S:.0f} s target: wall {median / TARGET_S:.2f}, CPU {float(np.median(cpu)) / TARGET_S:.2f} "
          "(<= 1 meets it)")


if __name__ == "__main__":
    main()
