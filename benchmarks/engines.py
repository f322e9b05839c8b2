"""Inference engines side by side on one network and one image: eager torch, ONNX Runtime,
OpenVINO (when installed) and torch.compile.

Rows: one batch of 8 tiles of 240², the whole 2048² image in one pass, and ``predict_tiled`` over
the 2048² image (two-pass 240-px tiles as in the paper, one pass of 512- and 1024-px tiles).
Columns: seconds (best of ``--repeat``, engines timed round robin so that each sees the same load), ratio to eager torch float32 (fold BN + channels_last,
today's predictor) and max |diff| of the probabilities vs eager torch float32. Warm-up (first
call; for torch.compile the compilation) is reported separately. Also times ``import torch``
vs ``import onnxruntime`` in fresh subprocesses.

The image is a 2048² mosaic of BBBC039 nuclei fields (a different field per channel), normalised
with :func:`stainseg.preprocess.normalize`, when ``../shared/data`` is there; otherwise smooth
random blobs. The network is ``--model DIR`` (a folder written by ``stainseg train``) or a
randomly initialised ``StainNet(ModelConfig(in_channels=3))``.

To emulate a CPU without bf16 / AVX-512 for torch, run it with oneDNN and ATen limited to AVX2
(ONNX Runtime and OpenVINO choose their kernels from CPUID and ignore these variables)::

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python benchmarks/engines.py
    .venv/bin/python benchmarks/engines.py [--model MODEL] [--repeat 3] [--no-compile] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def cpu_kind() -> str:
    """The CPU model name, whether it has AVX-512-BF16, and any ISA limit set in the environment."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    kind = f"{name}, {'AVX-512-BF16' if 'avx512_bf16' in flags else 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'}"
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if limit:
        kind += f"; torch limited to {limit} via ONEDNN_MAX_CPU_ISA"
        if os.environ.get("ATEN_CPU_CAPABILITY"):
            kind += f" + ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}"
        kind += " (AVX2 emulated for torch only; onnxruntime/OpenVINO pick kernels from CPUID)"
    return kind


def import_seconds(module: str, repeat: int = 3) -> float:
    """Best wall time of ``import module`` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return min(times)


def bench_image(channels: int, size: int = 2048) -> tuple[np.ndarray, str]:
    """(C, size, size) float32 normalised input and a description of where it came from."""
    from stainseg.preprocess import normalize

    files = sorted((DATA / "bbbc039" / "images").glob("*.tif")) if (DATA / "bbbc039" / "images").is_dir() else []
    if len(files) >= 12:
        import tifffile

        planes = []
        for c in range(channels):
            picks = [tifffile.imread(files[(c * 12 + i) % len(files)]).astype(np.float32) for i in range(12)]
            h, w = picks[0].shape
            rows = -(-size // h)
            cols = -(-size // w)
            mosaic = np.block([[picks[(r * cols + k) % len(picks)] for k in range(cols)] for r in range(rows)])
            planes.append(mosaic[:size, :size])
        return normalize(np.stack(planes)).astype(np.float32), f"BBBC039 mosaic {size}² x {channels} channels, normalised"
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    raw = np.stack([ndi.gaussian_filter(rng.random((size, size), dtype=np.float32), 6) for _ in range(channels)])
    return normalize(raw).astype(np.float32), f"synthetic smooth blobs {size}² x {channels} channels, normalised (no BBBC039 data)"


class ShapeCached:
    """A predictor that compiles one OpenVINO model per input shape (static shapes run faster)."""

    def __init__(self, onnx_path: Path, threads: int, precision: str) -> None:
        import openvino as ov

        self.ov, self.core, self.path = ov, ov.Core(), onnx_path
        self.config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled: dict[tuple[int, ...], Any] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from stainseg.segment.onnx_engine import softmax_channels

        shape = tuple(batch.shape)
        if shape not in self.compiled:
            model = self.core.read_model(str(self.path))
            model.reshape({model.inputs[0].any_name: shape})
            self.compiled[shape] = self.core.compile_model(model, "CPU", self.config)
        out = self.compiled[shape]([np.ascontiguousarray(batch, np.float32)])[0]
        return softmax_channels(np.array(out, dtype=np.float32))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model folder written by `stainseg train` (default: random StainNet, 3 channels)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--rows", default="batch,whole,tiled240,tiled512,tiled1024")
    args = parser.parse_args(argv)

    print(f"CPU: {cpu_kind()}; {args.threads} threads per engine")
    print(f"import torch {import_seconds('torch'):.2f} s · import onnxruntime {import_seconds('onnxruntime'):.2f} s (fresh subprocess, best of 3)")

    import torch

    torch.set_num_threads(args.threads)
    from stainseg.config import ModelConfig
    from stainseg.segment.onnx_engine import OnnxPredictor, export_onnx
    from stainseg.segment.predictor import TorchPredictor
    from stainseg.segment.tiling import predict_tiled

    try:
        from stainseg.network import StainNet, native_bf16
    except ImportError:  # older layout
        from stainseg.segment.predictor import cpu_supports_bf16 as native_bf16
        from stainseg.train.model import StainNet

    if args.model:
        from stainseg.model import Model

        model = Model.load(args.model, device="cpu").network
        channels = int(model.in_channels)
        print(f"model: {args.model} (trained, {channels} input channels)")
    else:
        torch.manual_seed(0)
        channels = 3
        model = StainNet(ModelConfig(in_channels=channels)).eval()
        print("model: randomly initialised StainNet(ModelConfig(in_channels=3)) (no --model given)")
    image, source = bench_image(channels, args.size)
    print(f"image: {source}")

    tmp = Path(tempfile.mkdtemp(prefix="engines."))
    t0 = time.perf_counter()
    onnx_path = export_onnx(model, tmp / "model.onnx", channels)
    print(f"export_onnx (fold BN, trace, check vs torch): {time.perf_counter() - t0:.1f} s")

    engines: dict[str, Callable[[], Callable[[np.ndarray], np.ndarray]]] = {
        "torch eager fp32 (fold BN, channels_last)": lambda: TorchPredictor(model, device="cpu", bfloat16=False),
    }
    bf16 = bool(native_bf16())
    if bf16:
        engines["torch eager bf16 (today's default here)"] = lambda: TorchPredictor(model, device="cpu", bfloat16=True)
    engines[f"onnxruntime {__import__('onnxruntime').__version__} fp32"] = lambda: OnnxPredictor(onnx_path, threads=args.threads)
    if not args.no_openvino:
        try:
            import openvino

            engines[f"openvino {openvino.__version__.split('-')[0]} fp32"] = lambda: ShapeCached(onnx_path, args.threads, "f32")
            if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") and not os.environ.get("ONEDNN_MAX_CPU_ISA"):
                engines[f"openvino {openvino.__version__.split('-')[0]} bf16"] = lambda: ShapeCached(onnx_path, args.threads, "bf16")
        except ImportError:
            print("openvino: not installed (rows skipped)")
    if not args.no_compile:
        engines["torch.compile fp32 (fold BN, channels_last)"] = lambda: TorchPredictor(model, device="cpu", bfloat16=False, compile=True)
        if bf16:
            engines["torch.compile bf16"] = lambda: TorchPredictor(model, device="cpu", bfloat16=True, compile=True)

    size = args.size
    rng = np.random.default_rng(1)
    starts = rng.integers(0, size - 240, (8, 2))
    tiles = np.stack([image[:, y : y + 240, x : x + 240] for y, x in starts]).astype(np.float32)
    rows: dict[str, Callable[[Callable], np.ndarray]] = {
        "batch 8 x 240²": lambda f: f(tiles),
        f"whole {size}² one pass": lambda f: f(image[None])[0],
        f"tiled {size}², two-pass 240, batch 8": lambda f: predict_tiled(image, f, tile_size=240, two_pass=True, batch_size=8, uncertainty=False)[0],
        f"tiled {size}², one-pass 512, batch 4": lambda f: predict_tiled(image, f, tile_size=512, two_pass=False, batch_size=4, uncertainty=False)[0],
        f"tiled {size}², one-pass 1024, batch 1": lambda f: predict_tiled(image, f, tile_size=1024, two_pass=False, batch_size=1, uncertainty=False)[0],
    }
    wanted = {"batch": 0, "whole": 1, "tiled240": 2, "tiled512": 3, "tiled1024": 4}
    keep = {wanted[r.strip()] for r in args.rows.split(",")}
    rows = {k: v for i, (k, v) in enumerate(rows.items()) if i in keep}
    compile_rows = {0, 1, 2}  # torch.compile recompiles per shape (10-30 s each): only these

    print()
    header = f"{'row':40s} {'engine':44s} {'warm-up s':>9s} {'best s':>8s} {'speed-up':>8s} {'max|diff|':>9s}"
    print(header)
    print("-" * len(header))
    predictors: dict[str, Any] = {}
    for engine, make in engines.items():  # built once; a row's first call is its warm-up (compilation)
        t0 = time.perf_counter()
        predictors[engine] = make()
        print(f"{'(set-up)':40s} {engine:44s} {time.perf_counter() - t0:9.2f}")
    for row_index, (row, run_row) in zip(sorted(keep), rows.items()):
        active = [e for e in predictors if not ("compile" in e and row_index not in compile_rows)]
        warm, outs, times = {}, {}, {e: [] for e in active}
        for engine in list(active):
            t0 = time.perf_counter()
            try:
                outs[engine] = np.asarray(run_row(predictors[engine]), dtype=np.float32)
            except Exception as exc:  # an engine that cannot run a row is reported, not fatal
                print(f"{row:40s} {engine:44s} failed: {' '.join(str(exc).split())[:80]}")
                active.remove(engine)
                continue
            warm[engine] = time.perf_counter() - t0
        for _ in range(args.repeat):  # round robin: every engine sees the same machine load
            for engine in active:
                t0 = time.perf_counter()
                run_row(predictors[engine])
                times[engine].append(time.perf_counter() - t0)
        reference = outs[active[0]]
        base = min(times[active[0]])
        for engine in active:
            best = min(times[engine])
            diff = float(np.abs(outs[engine] - reference).max())
            print(f"{row:40s} {engine:44s} {warm[engine]:9.2f} {best:8.3f} {base / best:7.2f}x {diff:9.1e}", flush=True)
        del outs
    return 0


if __name__ == "__main__":
    sys.exit(main())
