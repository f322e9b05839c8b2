"""Speed-up of ``--workers N`` (a Dask LocalCluster) over a serial run, and the scheduler overhead per task.

One synthetic experiment (default 2 wells x 3 sites x 4 times = 24 image sets of 256 x 256 x 3
bright-field planes) is segmented with a seeded untrained :class:`stainseg.Model`
(``Model.new(["BF"], cfg=cfg)`` with one input per z-plane, the experiment's segment settings:
two-pass 240-px tiles), measured in one run:

1. serial, in this process (``workers=0``);
2. ``workers=N`` end to end, as the CLI does it: start a LocalCluster, workers import torch and
   load the model once each, segment, shut down;
3. the same on an already running cluster (``scheduler=ADDRESS``), twice: the second run is the
   steady state (workers have imported everything and hold the model);
4. scheduler overhead: ``--noop`` tasks that do nothing, through :func:`stainseg.stages.parallel.map_tasks`
   on the warm cluster, per task; and raw ``client.map`` for comparison.

All labels of runs 2 and 3 are checked identical to the serial run. Also printed: the bytes of
one task description (what travels through the scheduler) against the bytes of the images it
names (what the worker reads itself from shared storage), and the load average (the machine is shared).

Usage::

    .venv/bin/python benchmarks/parallel_speed.py [--workers 2] [--size 256] [--noop 500]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _noop(task: dict) -> dict:
    return {"i": task["i"]}


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _labels(out: Path) -> dict[str, np.ndarray]:
    from stainseg.io.images import read_labels

    return {p.stem: read_labels(p) for p in sorted((out / "labels").glob("*.tif"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--wells", type=int, default=2)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--times", type=int, default=4)
    ap.add_argument("--noop", type=int, default=500, help="no-op tasks for the overhead measurement")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)

    import torch
    from distributed import Client, LocalCluster

    from stainseg.config import load_config
    from stainseg.io.layout import scan
    from stainseg.model import Model
    from stainseg.stages.parallel import map_tasks
    from stainseg.stages.segment import segment_experiment
    from stainseg.synth import generate_experiment

    work = a.workdir or Path(tempfile.mkdtemp(prefix="stainseg-parallel-"))
    try:
        toml = generate_experiment(work / "exp", wells=a.wells, sites=a.sites, times=a.times, size=a.size, seed=0)
        cfg = load_config(toml)
        cfg.segment.device = "cpu"
        first = scan(cfg).image_sets[0]
        planes = [f"{ch}[z={z}]" if z else ch for ch in cfg.channels.input for z in first.z_values.get(ch, [""])]
        torch.manual_seed(0)
        Model.new(cfg.channels.input, cfg=cfg, plane_names=planes).save(work / "model")
        n = a.wells * a.sites * a.times
        print(f"{n} image sets of {a.size}x{a.size}x3, cores: {os.cpu_count()}, torch threads here: {torch.get_num_threads()}, "
              f"load average before: {os.getloadavg()[0]:.2f}")

        serial, t_serial = _timed(segment_experiment, work / "model", toml, work / "serial")
        reference = _labels(work / "serial")
        par, t_par = _timed(segment_experiment, work / "model", toml, work / "par", workers=a.workers)
        assert _labels(work / "par").keys() == reference.keys()
        assert all(np.array_equal(v, reference[k]) for k, v in _labels(work / "par").items()), "labels differ"

        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        t_start = time.perf_counter() - t0
        try:
            _, t_cold = _timed(segment_experiment, work / "model", toml, work / "cold", scheduler=cluster.scheduler_address)
            warm, t_warm = _timed(segment_experiment, work / "model", toml, work / "warm", scheduler=cluster.scheduler_address)
            assert all(np.array_equal(v, reference[k]) for k, v in _labels(work / "warm").items()), "labels differ"
            threads = client.run(lambda: __import__("torch").get_num_threads())
            tasks = [{"i": i} for i in range(a.noop)]
            names = [str(i) for i in range(a.noop)]
            _, t_noop_serial = _timed(map_tasks, _noop, tasks, names, progress=False)
            _, t_one = _timed(map_tasks, _noop, tasks[:1], names[:1], scheduler=cluster.scheduler_address, progress=False)
            noop, t_noop = _timed(map_tasks, _noop, tasks, names, scheduler=cluster.scheduler_address, progress=False)
            assert len([r for r in noop.results if r]) == a.noop
            t_task = (t_noop - t_one) / (a.noop - 1)  # the slope: the fixed cost of a run (connect, checks, report) removed
            t0 = time.perf_counter()
            client.gather(client.map(_noop, tasks, pure=False))
            t_raw = time.perf_counter() - t0
        finally:
            client.close()
            cluster.close()

        row = serial.rows[0]
        task_bytes = len(pickle.dumps({"model": str(work / "model"), "out": str(work / "x"), "name": row["name"], "resume": False,
                                       "save_probability": False, "save_uncertainty": False,
                                       "fields": {"well": row["well"], "site": row["site"], "time": row["time"]},
                                       "channels": {"BF": row["sources"].split(";")}}))
        image_bytes = sum(Path(p).stat().st_size for p in row["sources"].split(";"))
        per = {k: float(np.mean([float(r[k]) for r in serial.rows])) for k in ("preprocess_s", "inference_s", "postprocess_s")}

        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"serial (1 process, {torch.get_num_threads()} torch threads): {t_serial:6.1f} s  "
              f"({t_serial / n:.2f} s/set; per set: preprocess {per['preprocess_s']:.2f} s, inference {per['inference_s']:.2f} s, "
              f"postprocess {per['postprocess_s']:.2f} s)")
        print(f"--workers {a.workers} end to end:            {t_par:6.1f} s  speed-up {t_serial / t_par:.2f}x  "
              f"(cluster start + imports + model loads included)")
        print(f"  LocalCluster start alone:           {t_start:6.1f} s")
        print(f"  on a running cluster, first run:    {t_cold:6.1f} s  speed-up {t_serial / t_cold:.2f}x  (workers import torch, load the model)")
        print(f"  on a running cluster, steady state: {t_warm:6.1f} s  speed-up {t_serial / t_warm:.2f}x  "
              f"(torch threads per worker: {sorted(set(threads.values()))})")
        print(f"scheduler overhead (no-op tasks, {a.noop}): map_tasks {1e3 * t_task:.1f} ms per task + {t_one:.2f} s per run "
              f"(connect, worker checks, report); raw client.map {1e3 * t_raw / a.noop:.1f} ms per task; serial map_tasks "
              f"{1e3 * t_noop_serial / a.noop:.3f} ms per task. Per task that is {100 * t_task / (t_warm * a.workers / n):.1f} % "
              f"of a segmentation task's worker time here")
        print(f"what travels per task: {task_bytes} bytes of task description; the worker reads {image_bytes} bytes of images itself")
        return 0
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
