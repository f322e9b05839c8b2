"""Pre- and post-processing speed of a 2048 x 2048 real-data image: before vs after issue 15 item 4.

Pre-processing: the spline illumination field of every input plane (``background_field``).
Post-processing: ``probability_to_labels`` on a 2-class map. "Old" is the code of commit
``BASELINE`` read from git history and run in the same process on the same input, so the ratio
is measured in one run on one machine.

Input: a 4 x 3 mosaic of BBBC039 nuclei images (U2OS, Hoechst) cropped to 2048 x 2048, three
planes (three different mosaics of the 100 images, as three input channels). The probability map is the manual
masks of the same mosaic, smoothed by a 1.5 px Gaussian (a realistic 2-class network output;
no trained model is needed). The illumination fields are also compared on deepcell phase-contrast
and isl phase-contrast planes.

numpy and scipy run their own C loops (numpy picks its SIMD kernels at run time; OpenBLAS
picks its kernel by CPU): ``ONEDNN_MAX_CPU_ISA`` does not affect them, only torch. To run as on an
AVX2-only CPU, switch numpy's AVX-512 kernels and OpenBLAS's off::

    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell python benchmarks/prepost_speed.py

(scipy.ndimage and skimage's watershed are compiled for a baseline without AVX-512 anyway.)

Usage::

    python benchmarks/prepost_speed.py [--data ../shared/data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stainseg.groundtruth.illumination import background_field  # noqa: E402
from stainseg.io.images import read_image, read_labels  # noqa: E402
from stainseg.segment.instances import probability_to_labels  # noqa: E402

#: The commit whose pre/post-processing is the "old" baseline (before issue 15 item 4).
BASELINE = "aa44fb2"
SIZE = 2048


def _baseline_module(name: str, path: str, replace: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """Import ``path`` as it was at ``BASELINE`` (from git), as module ``name``."""
    source = subprocess.run(["git", "show", f"{BASELINE}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{BASELINE}:{path}"
    saved = {key: sys.modules.get(key) for key in (replace or {})}
    sys.modules.update(replace or {})
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def baseline():
    """(old background_field, old probability_to_labels, old seeds module)."""
    illum = _baseline_module("baseline_illumination", "src/stainseg/groundtruth/illumination.py")
    seeds = _baseline_module("baseline_seeds", "src/stainseg/segment/seeds.py")
    inst = _baseline_module("baseline_instances", "src/stainseg/segment/instances.py",
                            {"stainseg.segment.seeds": seeds})
    return illum.background_field, inst.probability_to_labels, seeds


def mosaic(tiles: list[np.ndarray], size: int = SIZE, columns: int = 3) -> np.ndarray:
    """Tiles side by side, ``columns`` per row, cropped to ``size`` x ``size``."""
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)[:size, :size]


def bbbc039_mosaic(data: Path, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, instance labels) of 12 BBBC039 fields from ``start`` (4 x 3 of 520 x 696 ≥ 2048²)."""
    images = sorted((data / "bbbc039" / "images").glob("*.tif"))[start:start + 12]
    tiles, masks, offset = [], [], 0
    for path in images:
        tiles.append(read_image(path))
        labels = read_labels(data / "bbbc039" / "masks" / f"{path.stem}.png").astype(np.int32)
        labels[labels > 0] += offset
        offset = int(labels.max())
        masks.append(labels)
    return mosaic(tiles), mosaic(masks)


def smoothed_map(truth: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), sigma)
    return np.stack([1 - fg, fg])


def timed_pair(old, new, repeats: int = 3):
    """Best seconds of ``repeats`` calls of ``old()`` and of ``new()``, alternating (so that a change of
    machine load hits both), and their last results."""
    best = [np.inf, np.inf]
    results = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((old, new)):
            start = time.perf_counter()
            results[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1], results[0], results[1]


def field_difference(old: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    rel = np.abs(new.astype(np.float64) / old.astype(np.float64) - 1)
    return float(rel.max()), float(np.median(rel))


def numpy_simd() -> str:
    """The SIMD level numpy dispatches to here (its AVX-512 kernels can be switched off)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return "unknown"
    return "AVX-512" if features.get("X86_V4") else "AVX2" if features.get("X86_V3") else "SSE"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
                return f"{line.split(':', 1)[1].strip()} ({isa})"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} usable cores, load average {load:.1f}; "
          f"numpy {np.__version__} using {numpy_simd()} kernels; old = commit {BASELINE}, best of {args.repeats}, alternating")
    old_field, old_labels, old_seeds = baseline()

    # ---- pre-processing: illumination fields of three 2048^2 planes
    planes = [bbbc039_mosaic(args.data, start)[0] for start in (0, 12, 24)]
    t_old, t_new, _, _ = timed_pair(lambda: [old_field(p) for p in planes], lambda: [background_field(p) for p in planes],
                                    args.repeats)
    print(f"pre-processing (3 x {SIZE}^2 BBBC039 planes, illumination fields): old {t_old:.3f} s, "
          f"new {t_new:.3f} s, new/old {t_new / t_old:.2f}")
    others = {"BBBC039 mosaic": planes}
    deepcell = sorted((args.data / "deepcell" / "images").glob("*_phase.tif"))
    isl = sorted((args.data / "isl" / "images").glob("isl_s1_phase_z*.tif"))
    others["deepcell phase"] = [read_image(p) for p in deepcell]
    others["isl phase"] = [read_image(p) for p in isl]
    for name, images in others.items():
        diffs = [field_difference(old_field(im), background_field(im)) for im in images]
        print(f"  field new vs old, {name} ({len(images)} planes): max relative difference "
              f"{max(d[0] for d in diffs):.2e}, median {np.median([d[1] for d in diffs]):.2e}")

    # ---- post-processing: probability map -> labels
    _, truth = bbbc039_mosaic(args.data, 0)
    prob = smoothed_map(truth)
    t_old, t_new, lab_old, lab_new = timed_pair(lambda: old_labels(prob), lambda: probability_to_labels(prob),
                                                args.repeats)
    same = np.array_equal(lab_old, lab_new)
    print(f"post-processing ({SIZE}^2, {int(lab_new.max())} objects from {len(np.unique(truth)) - 1} manual nuclei): "
          f"old {t_old:.3f} s, new {t_new:.3f} s, new/old {t_new / t_old:.2f}; "
          f"labels identical: {same} ({int(np.count_nonzero(lab_old != lab_new))} pixels differ)")
    # the single-threaded seed steps alone (the watershed runs on two threads and suffers most from a busy machine)
    from stainseg.segment import seeds

    mask = (1.0 - prob[0]) > 0.5

    def new_seeds():
        components = seeds.mask_components(mask)
        markers, _, _ = seeds.distance_seeds(mask, None, components)
        return seeds.seed_unseeded(markers, mask, components)

    t_old, t_new, m_old, m_new = timed_pair(lambda: old_seeds.seed_unseeded(old_seeds.distance_seeds(mask, None)[0], mask),
                                            new_seeds, args.repeats)
    print(f"  of which seeds (distance map, peaks, unseeded components): old {t_old:.3f} s, new {t_new:.3f} s, "
          f"new/old {t_new / t_old:.2f}; markers identical: {np.array_equal(m_old, m_new)}")


if __name__ == "__main__":
    main()
