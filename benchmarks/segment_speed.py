"""Segmentation speed: our optimised pipeline vs the naive baseline, measured in one run.

Default mode: one 2048 x 2048 x 3 uint16 TIFF (blobs on a textured, unevenly lit background),
an untrained :class:`stainseg.Model` (``Model.new``: random weights, 3 input planes, default
settings), end to end (read TIFF → ``model.prepare`` (illumination + normalisation) →
``model.predict_prepared`` (two-pass 240-px tiles, as ``stainseg segment``) → labels with
``model.instance_options()`` → write TIFF), timed per stage, against the naive baseline: the same
read, ``model.prepare``, post-processing and write, with the inference replaced by one plain float32
whole-image forward of the same network (no tiling, no batch-norm folding, no channels_last, no bfloat16). Post-processing is also timed on a realistic
probability map with ~1000 touching cells (a random network's output is not realistic).

``--big``: ``benchmarks/big_image.py``: a 16384 x 16384 uint16 mosaic of real BBBC039 fields through
the real ``stainseg segment`` path (block-wise above ``[segment] blockwise_pixels``: the model's own
preprocessing band by band, streamed tiles, instance bands, OME-Zarr labels), a model trained on BBBC039
(``--model``, default ``/tmp/run039b/model`` or a tiny one trained there), with the time and the peak RSS
of the segmenting process. (It replaced a version that normalised with its own percentiles and ran random weights.)

``--model MODEL [--image PLANE ...]``: a trained model folder (``Model.load``) instead of random
weights (its preprocessing, tile size, threshold, minimum size and dilation), on the given image: one (C, Y, X) stack or one
file per input plane, stacked in order (default: the synthetic image with the model's channels).
A trained model gives realistic probability maps, so post-processing is timed on real objects.

``--cellpose-python PY``: also time Cellpose 3 on the same TIFF with ``PY benchmarks/cellpose_time.py``
(random weights; cellpose is kept in its own environment, see that script), and print the ratio.

Usage::

    .venv/bin/python benchmarks/segment_speed.py [--repeat 3] [--compile]
    .venv/bin/python benchmarks/segment_speed.py --model MODEL --image Z0.tif Z1.tif Z2.tif [--cellpose-python PY]
    .venv/bin/python benchmarks/segment_speed.py --big [--big-size 16384] [--model MODEL] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from stainseg.io.images import read_image, write_labels
from stainseg.model import Model
from stainseg.network import native_bf16
from stainseg.segment.instances import probability_to_labels
from stainseg.segment.predictor import TorchPredictor, predict_whole_naive
from stainseg.segment.tiling import predict_tiled


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_cells(shape: tuple[int, int], n_cells: int, seed: int = 0, radius=(8.0, 15.0)) -> np.ndarray:
    """Touching round-ish cells as a label image (Voronoi split of overlapping disks)."""
    rng = np.random.default_rng(seed)
    centres = (rng.random((n_cells, 2)) * np.array(shape)).astype(int)
    radii = rng.uniform(*radius, n_cells)
    seeds = np.zeros(shape, np.int32)
    seeds[centres[:, 0], centres[:, 1]] = np.arange(1, n_cells + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    owner = seeds[iy, ix]
    return np.where(dist < np.r_[0, radii][owner], owner, 0).astype(np.int32)


def synthetic_image(cells: np.ndarray, channels: int, seed: int = 0) -> np.ndarray:
    """uint16 (C, Y, X): cell bodies with texture on a textured, vignetted background."""
    rng = np.random.default_rng(seed)
    shape = cells.shape
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    vignette = 1.0 - 0.4 * (((yy - shape[0] / 2) / shape[0]) ** 2 + ((xx - shape[1] / 2) / shape[1]) ** 2)
    fg = (cells > 0).astype(np.float32)
    edges = (ndi.morphological_gradient(cells, size=3) > 0).astype(np.float32)
    out = []
    for c in range(channels):
        texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2 + c)
        body = ndi.gaussian_filter(fg, 1.0 + c) * (0.6 + 0.3 * texture) + 0.5 * edges * (c == 0)
        plane = 2000 * vignette * (1.0 + 0.8 * body + 0.1 * texture) + rng.normal(0, 30, shape)
        out.append(np.clip(plane, 0, 65535).astype(np.uint16))
    return np.stack(out)


def realistic_probability(cells: np.ndarray) -> np.ndarray:
    """A 3-class map (background, interior, boundary) as a trained network would give."""
    fg = ndi.gaussian_filter((cells > 0).astype(np.float32), 1.5)
    edge = ndi.morphological_gradient(cells, size=3) > 0
    boundary = np.minimum(ndi.gaussian_filter(edge.astype(np.float32), 1.0) * 2, 1) * fg
    return np.stack([1 - fg, np.clip(fg - boundary, 0, 1), boundary])


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def end_to_end(path: Path, out: Path, model: Model, infer) -> dict[str, float]:
    """Read → ``model.prepare`` → ``infer(x) -> prob`` → labels → write; seconds per stage."""
    t = {}
    raw, t["read"] = _timed(read_image, path)
    x, t["preprocess"] = _timed(model.prepare, raw, path)
    prob, t["inference"] = _timed(infer, x)
    labels, t["postprocess"] = _timed(probability_to_labels, prob, **model.instance_options())
    _, t["write"] = _timed(write_labels, out, labels)
    t["total"] = sum(t.values())
    t["objects"] = int(labels.max())
    return t


def _fmt(t: dict[str, float]) -> str:
    keys = ("read", "preprocess", "inference", "postprocess", "write")
    return " · ".join(f"{k} {t[k]:.2f}" for k in keys) + f" · total {t['total']:.2f} s"


def run_default(args) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="segspeed-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size
    import tifffile

    if args.model:
        model = Model.load(args.model, device="cpu")
        what = f"trained model {args.model} (dilation {model.dilation}, {model.preprocessing.normalization} normalisation)"
    else:
        torch.manual_seed(0)
        model = Model.new(["BF"], plane_names=["BF0", "BF1", "BF2"])
        model.segment_settings.device = "cpu"
        what = "StainNet random weights"
    channels = model.in_channels
    seg = model.segment_settings
    # synthetic cells: for the synthetic image, and for the realistic map timed with a random network
    cells = synthetic_cells((size, size), n_cells=int(1000 * (size / 2048) ** 2)) if not (args.image and args.model) else None
    if args.image:
        planes = [np.asarray(read_image(p)) for p in args.image]
        image = planes[0] if len(planes) == 1 else np.stack(planes)
        image = image[None] if image.ndim == 2 else image
        if image.shape[0] != channels:
            raise SystemExit(f"--image gives {image.shape[0]} plane(s), the model takes {channels}")
        source = ", ".join(Path(p).name for p in args.image)
    else:
        image = synthetic_image(cells, channels)
        source = f"synthetic, {int(cells.max())} cells"
    path = work / "image.tif"
    tifffile.imwrite(path, image, photometric="minisblack")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, native bf16: {native_bf16()}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"image {image.shape[1]} x {image.shape[2]} x {channels} {image.dtype} ({source}); model {what}, "
          f"tiles {seg.tile_size} {'two' if seg.two_pass else 'one'}-pass, batch {seg.batch_size}")

    if args.compile:  # the model's own predictor is not compiled: the same tiling with a compiled one
        ours = TorchPredictor(model.network, device="cpu", bfloat16=seg.bfloat16, compile=True)
    else:
        ours = model.predictor()
    tiles = np.zeros((seg.batch_size, channels, seg.tile_size, seg.tile_size), np.float32)
    if args.compile:
        _, warm = _timed(ours, tiles)
        print(f"torch.compile warm-up {warm:.1f} s (once per process)")
    ours(tiles)
    model.prepare(read_image(path), path)  # warm-up: the first call pays one-off set-up that would count against the first row

    def tiled(x):  # what ``stainseg segment`` runs (Model.run: probabilities and uncertainty)
        if args.compile:
            return predict_tiled(x, ours, tile_size=seg.tile_size, two_pass=seg.two_pass, batch_size=seg.batch_size)[0]
        return model.predict_prepared(x, uncertainty=True)[0]

    whole_fast = TorchPredictor(model.network, device="cpu", bfloat16=seg.bfloat16)

    def whole_optimised(x):
        return whole_fast(x[None])[0]

    def naive(x):
        return predict_whole_naive(model.network, x)

    runs = {f"ours: {'two' if seg.two_pass else 'one'}-pass tiled (" + ours.describe() + ", BN folded" + (", compiled" if args.compile else "") + ")": tiled,
            "ours: whole image (" + whole_fast.describe() + ", BN folded)": whole_optimised,
            "naive baseline: whole image float32, no optimisation": naive}
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for name, infer in runs.items():
            t = end_to_end(path, work / "labels.tif", model, infer)
            if name not in best or t["total"] < best[name]["total"]:
                best[name] = t
    print(f"\nend to end, best of {args.repeat} (seconds):")
    for name, t in best.items():
        print(f"  {name}\n      {_fmt(t)}  [{t['objects']} objects]")
    base = next(v for k, v in best.items() if k.startswith("naive"))["total"]
    for name, t in best.items():
        if not name.startswith("naive"):
            print(f"ratio naive / ours ({name.split('(')[0].strip()}): {base / t['total']:.2f}x")

    if not args.model:  # a random network's map has few, unrealistic objects: time post-processing on a realistic one
        prob = realistic_probability(cells)
        for dilation in (3, 9):
            times = []
            for _ in range(args.repeat):
                labels, dt = _timed(probability_to_labels, prob, 0.5, None, dilation)
                times.append(dt)
            print(f"post-processing of a realistic 3-class {size}^2 map, dilation {dilation}: {min(times):.2f} s, "
                  f"{int(labels.max())} objects ({int(cells.max())} true cells)")
        prob2 = np.stack([prob[0], 1 - prob[0]])
        labels, dt = _timed(probability_to_labels, prob2, 0.5, None, 3)
        print(f"post-processing of the 2-class map (distance-transform seeds): {dt:.2f} s, {int(labels.max())} objects")
    cellpose_ratio(args, path, best[next(iter(best))]["total"])
    print(f"load average after: {os.getloadavg()[0]:.2f}; peak RSS {peak_rss_gb():.2f} GB")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def cellpose_ratio(args, path: Path, ours_s: float) -> None:
    """Time Cellpose 3 on the same TIFF in its own interpreter (``--cellpose-python``) and print the ratio."""
    import json
    import subprocess

    python = args.cellpose_python or sys.executable
    script = Path(__file__).with_name("cellpose_time.py")
    if subprocess.run([python, "-c", "import cellpose"], capture_output=True).returncode != 0:
        print("cellpose: skipped (not importable by " + python + "; install 'cellpose<4' in its own venv and pass --cellpose-python)")
        return
    run = subprocess.run([python, str(script), str(path), "--repeat", str(args.repeat)], capture_output=True, text=True)
    if run.returncode != 0:
        print("cellpose: failed: " + (run.stderr.strip().splitlines() or ["?"])[-1])
        return
    res = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"cellpose {res['cellpose']} (CPnet, random weights, CPU, {res['threads']} threads) on the same image: eval "
          f"{res['eval_no_masks_s']:.1f} s without masks, {res['eval_with_masks_s']:.1f} s with masks; "
          f"ratio cellpose / ours end to end: {res['eval_no_masks_s'] / ours_s:.1f}x (network only) to "
          f"{res['eval_with_masks_s'] / ours_s:.1f}x (with masks)")


# --------------------------------------------------------------------------- big images


def run_big(args) -> None:
    """The real block-wise path on a huge mosaic of real fields: ``benchmarks/big_image.py``."""
    sys.path.insert(0, str(Path(__file__).parent))
    from big_image import main as big_image

    big_image(["--size", str(args.big_size)] + (["--model", args.model] if args.model else [])
              + (["--workdir", args.workdir] if args.workdir else []))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of the test image (default 2048)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; the best is reported")
    parser.add_argument("--compile", action="store_true", help="torch.compile our tiled predictor")
    parser.add_argument("--big", action="store_true", help="block-wise segmentation of a huge BBBC039 mosaic (benchmarks/big_image.py)")
    parser.add_argument("--big-size", type=int, default=16384)
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder, removed)")
    parser.add_argument("--model", help="a trained model directory instead of random weights")
    parser.add_argument("--image", nargs="+", help="with --model: one (C, Y, X) stack or one file per input plane")
    parser.add_argument("--cellpose-python", help="interpreter of an environment with cellpose, to time it on the same image")
    args = parser.parse_args(argv)
    if args.big:
        run_big(args)
    else:
        run_default(args)


if __name__ == "__main__":
    sys.exit(main())
