"""A huge image through the real ``stainseg segment`` path: time and peak memory of block-wise segmentation.

The input is a 16384 x 16384 uint16 TIFF (512 MiB, uncompressed): a mosaic of the real BBBC039
Hoechst fields (520 x 696 each, cycled over the 100 fields with flips so that neighbours differ),
written band by band in a child process, so that this process never holds it. The model is a
network trained on BBBC039 (``--model``; default ``/tmp/run039b/model``, else a tiny one is trained
here, in a child process, on a few BBBC039 crops). This process then runs the command line itself,
``stainseg segment MODEL mosaic.tif -o OUT``: the image is above ``[segment] blockwise_pixels``, so
it is segmented block-wise (:mod:`stainseg.segment.blockwise`): the model's own preprocessing band
by band with whole-image statistics, streamed tiles into a temporary probability zarr, instances
in row bands, labels to ``OUT/labels/mosaic.ome.zarr``, object table per band.

Printed: the CPU, the load average before and after, the wall time and the stage times of the
index row, the objects, the files written, and the peak resident memory of this (the segmenting)
process, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, against the 4 GB budget.

Usage::

    .venv/bin/python benchmarks/big_image.py [--size 16384] [--model MODEL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STAINSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "bbbc039"
DEFAULT_MODEL = Path("/tmp/run039b/model")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cpu_name() -> str:
    """The CPU model, its logical CPUs here, and whether it has AVX-512 BF16 (from /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown CPU")
    bf16 = "avx512_bf16" in info
    return f"{name}, {len(os.sched_getaffinity(0))} CPUs{', AVX-512-BF16' if bf16 else ''}"


def make_mosaic(path: Path, size: int, data: Path) -> None:
    """Write a (size, size) uint16 mosaic of BBBC039 fields as an uncompressed TIFF, one row of fields at a time."""
    import tifffile

    files = sorted((data / "images").glob("*.tif"))
    fields = [tifffile.imread(f) for f in files]
    fh, fw = fields[0].shape
    out = tifffile.memmap(path, shape=(size, size), dtype=np.uint16, photometric="minisblack")
    for i, y0 in enumerate(range(0, size, fh)):
        row = np.empty((fh, size + fw), np.uint16)
        for j, x0 in enumerate(range(0, size, fw)):
            k = i * (size // fw + 1) + j
            field = fields[k % len(fields)]
            if (k // len(fields)) % 2:
                field = field[::-1]
            if (i + j) % 2:
                field = field[:, ::-1]
            row[:, x0:x0 + fw] = field
        h = min(fh, size - y0)
        out[y0:y0 + h] = row[:h, :size]
    out.flush()
    del out


def train_tiny(out: Path, data: Path) -> None:
    """A small model on BBBC039 crops (automatic labels), when no trained model is given."""
    import tifffile

    import stainseg

    files = sorted((data / "images").glob("*.tif"))[:6]
    crops = [tifffile.imread(f)[:512, :512] for f in files]
    stainseg.train(crops, [stainseg.automatic_labels(nuclei=c) for c in crops], out=out, iterations=200, crop_size=128,
                   progress=False, seed=0)


def _child(target, *args) -> float:
    t0 = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed in its child process (exit code {process.exitcode})")
    return time.perf_counter() - t0


def _size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of the mosaic (default 16384)")
    parser.add_argument("--model", type=Path, default=None, help=f"trained model folder (default {DEFAULT_MODEL} if present)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if not (DATA / "images").is_dir():
        raise SystemExit(f"BBBC039 is absent ({DATA}); this benchmark needs its real fields")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bigimage-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    image = work / "mosaic.tif"
    dt = _child(make_mosaic, image, args.size, DATA)
    print(f"input: {args.size} x {args.size} uint16 mosaic of BBBC039 fields, {image.stat().st_size / 2**20:.0f} MiB TIFF, "
          f"made in a child process in {dt:.1f} s", flush=True)
    model = args.model or (DEFAULT_MODEL if (DEFAULT_MODEL / "model.json").is_file() else None)
    if model is None:
        model = work / "model"
        dt = _child(train_tiny, model, DATA)
        print(f"model: none given and {DEFAULT_MODEL} absent; trained a tiny one on 6 BBBC039 crops in {dt:.0f} s (child process)")
    print(f"model: {model}", flush=True)
    from stainseg.cli import main as stainseg_main

    out = work / "out"
    rss_before = peak_rss_gb()
    t0 = time.perf_counter()
    code = stainseg_main(["segment", str(model), str(image), "-o", str(out)])
    wall = time.perf_counter() - t0
    if code != 0:
        print((out / "run.json").read_text() if (out / "run.json").exists() else "no run.json")
        raise SystemExit(f"stainseg segment failed (exit code {code})")
    with open(out / "index.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    stages = {k: float(v) for k, v in row.items() if k.endswith("_s") and v}
    peak = peak_rss_gb()
    print(f"route: {'block-wise' if row.get('blockwise') == 'True' else 'whole image'}; engine {row['engine']}; "
          f"{row['cells']} objects; shape {row['shape']}; flags: {row['flags'] or 'none'}")
    print("stages (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in stages.items()))
    labels = Path(row["label_file"])
    print(f"wrote {labels.relative_to(work)} ({_size_on_disk(labels) / 2**20:.0f} MiB), cells.csv "
          f"({(out / 'cells.csv').stat().st_size / 2**20:.1f} MiB); left in OUT: {sorted(p.name for p in out.iterdir())}")
    print(f"stainseg segment wall time {wall:.1f} s; peak RSS of this process {peak:.2f} GB "
          f"({'<' if peak < 4 else '>='} 4 GB; {rss_before:.2f} GB before segmenting: imports and the child processes' start)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(json.dumps({"size": args.size, "wall_s": round(wall, 1), "peak_rss_gb": round(peak, 2), "objects": int(row["cells"]),
                      "stages_s": {k: round(v, 1) for k, v in stages.items()}, "cpu": cpu_name()}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
