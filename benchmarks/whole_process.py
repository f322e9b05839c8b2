"""`stainseg segment MODEL IMAGE` as a whole process: wall time, the part table and peak RSS, per engine and tiling.

Each variant runs ``stainseg segment MODEL IMAGE -o OUT --engine E`` in a fresh process
(variants round robin, best of ``--repeat`` by wall time). The parts come from ``OUT/index.csv``
(read, check, pre-processing, inference, post-processing, write); start-up is the wall time minus
them (interpreter, imports, model load, writing run.json). Peak RSS is the child's ``ru_maxrss``.
``--tiling tiles`` runs the paper's two-pass 240-px tiles (a model copy with ``tiling = "tiles"``).
``--cellpose-python PY`` also times Cellpose 3 on the same image (``benchmarks/cellpose_time.py``), its mask
step included on the flows a trained model would give for the objects our default finds.

    .venv/bin/python benchmarks/whole_process.py MODEL IMAGE [--repeat 3] [--cellpose-python PY]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("read_s", "check_s", "preprocess_s", "inference_s", "postprocess_s", "write_s")


def cpu_kind() -> str:
    sys.path.insert(0, str(Path(__file__).parent))
    from engines import cpu_kind as kind

    return kind()


def run_once(model: Path, image: Path, out: Path, engine: str) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    cli = "import sys; from stainseg.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", cli, "segment", str(model), str(image), "-o", str(out), "--engine", engine],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"segment failed: {proc.stderr.read().decode()[-500:] if proc.stderr else status}")
    row = next(csv.DictReader(open(out / "index.csv")))
    result = {k: float(row[k]) for k in PARTS}
    result.update(wall=wall, startup=wall - sum(result.values()), rss_gb=usage.ru_maxrss / 1024**2, cells=int(row["cells"]))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("image", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cellpose-python")
    ap.add_argument("--only", help="comma-separated variant numbers to run (1-based, in the order printed; default all)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wholeproc-"))
    tiles = work / "model_tiles"  # the same folder with the paper's tiling
    shutil.copytree(args.model, tiles)
    meta = json.loads((tiles / "model.json").read_text())
    meta["segment"]["tiling"] = "tiles"
    (tiles / "model.json").write_text(json.dumps(meta))
    variants = {"onnx, overlap tiles (default)": (args.model, "onnx"), "torch, overlap tiles": (args.model, "torch"),
                "onnx, two-pass 240 (paper)": (tiles, "onnx"), "torch, two-pass 240 (paper)": (tiles, "torch")}
    if args.only:
        keep = {int(i) - 1 for i in args.only.split(",")}
        variants = {k: v for i, (k, v) in enumerate(variants.items()) if i in keep}
    print(f"CPU: {cpu_kind()}; load average {os.getloadavg()[0]:.1f}; image {args.image}")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for name, (model, engine) in variants.items():
            r = run_once(model, args.image, work / "out", engine)
            if name not in best or r["wall"] < best[name]["wall"]:
                best[name] = r
    print(f"best of {args.repeat} (s): " + " | ".join(p.replace("_s", "") for p in PARTS) + " | start-up | whole | peak RSS GB | cells")
    for name, r in best.items():
        print(f"  {name:32s} " + " ".join(f"{r[p]:.2f}" for p in PARTS) + f" | {r['startup']:.2f} | {r['wall']:.2f} | {r['rss_gb']:.2f} | {r['cells']}")
    if args.cellpose_python:
        # our default's labels give the flows a trained Cellpose would output: its mask step is timed on them too
        run_once(args.model, args.image, work / "out", "onnx")
        labels = next((work / "out" / "labels").glob("*.tif"))
        run = subprocess.run([args.cellpose_python, str(Path(__file__).with_name("cellpose_time.py")), str(args.image),
                              "--flows-from", str(labels)], capture_output=True, text=True)
        if run.returncode == 0:
            res = json.loads(run.stdout.strip().splitlines()[-1])
            ours = best["onnx, overlap tiles (default)"]["wall"]
            print(f"cellpose {res['cellpose']} eval: {res['eval_no_masks_s']:.1f} s without masks, {res['eval_with_masks_s']:.1f} s with masks "
                  f"(network + flows; no start-up counted); ratio to our whole process {res['eval_with_masks_s'] / ours:.1f}x")
            if "eval_trained_estimate_s" in res:
                print(f"cellpose mask step on the ideal flows of our {res['objects_given']} objects: {res['mask_step_ideal_flows_s']:.1f} s "
                      f"({res['objects_from_ideal_flows']} objects found); a trained model's eval with masks "
                      f"{res['eval_trained_estimate_s']:.1f} s: ratio to our whole process {res['eval_trained_estimate_s'] / ours:.1f}x")
        else:
            print("cellpose failed: " + run.stderr.strip()[-300:])
    print(f"load average after {os.getloadavg()[0]:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
