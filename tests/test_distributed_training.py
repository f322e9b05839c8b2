"""`torchrun --nproc_per_node 2` training on the CPU (gloo DDP) segments as well as a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stainseg.config import load_config
from stainseg.evaluate.batch import evaluate_arrays
from stainseg.stages.groundtruth import run_groundtruth
from stainseg.io.images import read_labels
from stainseg.stages.segment import segment_experiment
from stainseg.synth import generate_experiment

BIN = Path(sys.executable).parent


def _score(model: Path, toml: Path, out: Path) -> float:
    result = segment_experiment(model, toml, out, only=["A01_s2_t01"])
    assert not result.failed
    truth = read_labels(toml.parent / "truth" / "cells" / "A01_s2_t01.tif")
    pred = read_labels(out / "labels" / "A01_s2_t01.tif")
    return evaluate_arrays({"x": (truth, pred)})["overall"]["f1"]


@pytest.mark.slow
def test_torchrun_two_processes_matches_single(tmp_path: Path) -> None:
    toml = generate_experiment(tmp_path / "exp", wells=1, sites=2, times=2, size=256, seed=4)
    run_groundtruth(load_config(toml), tmp_path / "gt", progress=False)
    common = ["train", str(toml), "--labels", str(tmp_path / "gt"), "--iterations", "300"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([str(BIN / "stainseg"), *common, "-o", str(tmp_path / "m1")], env=env,
                            capture_output=True, text=True, timeout=1200)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", str(BIN / "stainseg"), *common, "-o", str(tmp_path / "m2")],
                           env=env, capture_output=True, text=True, timeout=1200)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert json.loads((tmp_path / "m2" / "model.json").read_text())["training"]["processes"] == 2
    f1_single = _score(tmp_path / "m1", toml, tmp_path / "s1")
    f1_multi = _score(tmp_path / "m2", toml, tmp_path / "s2")
    print(f"F1@IoU0.5 single process {f1_single:.3f}, torchrun x2 {f1_multi:.3f}")
    assert f1_multi >= f1_single - 0.02
