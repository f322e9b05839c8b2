"""SIGKILL during training, then `--resume`: training continues from the last checkpoint and ends with
weights identical to an uninterrupted run (same seed, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stainseg.config import load_config
from stainseg.stages.groundtruth import run_groundtruth
from stainseg.synth import generate_experiment

STAINSEG = str(Path(sys.executable).parent / "stainseg")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("kill")
    toml = generate_experiment(base / "exp", wells=1, sites=2, times=1, size=128, seed=7)
    text = toml.read_text() + "\n[train]\niterations = 40\ncheckpoint_every = 5\n\n[segment]\ndilation = 3\n"
    toml.write_text(text)
    run_groundtruth(load_config(toml), base / "gt", progress=False)
    return toml, base / "gt"


def _train(toml: Path, gt: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([STAINSEG, "train", str(toml), "--labels", str(gt), "-o", str(out), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_gives_identical_weights(prepared, tmp_path: Path) -> None:
    toml, gt = prepared
    reference = _train(toml, gt, tmp_path / "uninterrupted")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]

    victim = _train(toml, gt, tmp_path / "killed")
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 600
    while time.time() < deadline:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["state"]["iteration"] >= 10:
            break
        if victim.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    killed_at = torch.load(checkpoint, weights_only=False)["state"]["iteration"]
    assert 10 <= killed_at < 40 and not (tmp_path / "killed" / "model.pt").exists()
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp") and p.stat().st_size == 0]

    resumed = _train(toml, gt, tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    a = torch.load(tmp_path / "uninterrupted" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume at iteration {killed_at}: {different[:5]}"
