"""Killed runs: SIGKILL in the middle of `stainseg segment`, then `--resume`.

Every label file left by the killed process is complete and readable (outputs are written to a
hidden temporary and renamed), the stale lock and temporaries are cleaned up by the resumed run,
and the finished set equals that of an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stainseg.cli import main
from stainseg.io.images import read_labels

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import assert_clean, make_model  # noqa: E402

STAINSEG = Path(sys.executable).with_name("stainseg")
SIZE = 128  # with 64-pixel tiles: slow enough to be killed in the middle


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from stainseg.synth import generate_experiment

    base = tmp_path_factory.mktemp("killed")
    toml = generate_experiment(base / "exp", wells=1, sites=2, times=8, size=SIZE, seed=1)
    model = make_model(base / "model", toml, 3)
    ref = base / "reference"
    assert main(["segment", str(model), "--experiment", str(toml), "-o", str(ref)]) == 0
    return {"toml": toml, "model": model, "ref": ref}


def _cells(out: Path) -> list[dict[str, str]]:
    with open(out / "cells.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _kill_when(proc: subprocess.Popen, labels: Path, count: int, timeout: float = 120.0) -> int:
    """SIGKILL ``proc`` as soon as ``labels`` holds ``count`` label files; returns how many there were."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = len(list(labels.glob("*.tif"))) if labels.is_dir() else 0
        if done >= count or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return done


@pytest.mark.skipif(not STAINSEG.exists() or os.name != "posix", reason="needs the installed stainseg command and SIGKILL")
def test_sigkill_during_segmentation_then_resume(world, tmp_path):
    out = tmp_path / "out"
    total = len(list((world["ref"] / "labels").glob("*.tif")))
    assert total == 16
    proc = subprocess.Popen([str(STAINSEG), "segment", str(world["model"]), "--experiment", str(world["toml"]), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, out / "labels", count=4)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    # what the killed run left: complete label files only (each equal to the reference), a stale lock, no run.json
    done = sorted(p.name for p in (out / "labels").glob("*.tif"))
    assert 4 <= len(done) < total
    for name in done:
        np.testing.assert_array_equal(read_labels(out / "labels" / name), read_labels(world["ref"] / "labels" / name))
    for record in (out / "records").glob("*.json"):
        json.loads(record.read_text())
    assert not (out / "run.json").exists()
    assert (out / ".stainseg.lock").exists()
    first_record = out / "records" / f"{Path(done[0]).stem}.json"
    kept_mtime = first_record.stat().st_mtime_ns
    # a temporary as a kill in the middle of a write leaves it
    stale = out / "labels" / f".{done[0]}.k1ll3d_x.tmp"
    stale.write_bytes(b"II*\x00 half a file")

    rc = main(["segment", str(world["model"]), "--experiment", str(world["toml"]), "-o", str(out), "--resume"])
    assert rc == 0
    assert not stale.exists(), "the resumed run must remove temporaries left by the killed one"
    assert first_record.stat().st_mtime_ns == kept_mtime, "a completed image set was redone"
    assert_clean(out)
    got = sorted(p.name for p in (out / "labels").glob("*.tif"))
    assert got == sorted(p.name for p in (world["ref"] / "labels").glob("*.tif"))
    for name in got:
        assert (out / "labels" / name).read_bytes() == (world["ref"] / "labels" / name).read_bytes(), name
    assert _cells(out) == _cells(world["ref"])
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] == total and run["failed"] == []


def test_resume_redoes_an_image_set_without_its_record(world, tmp_path):
    """A label file without its record (killed between the two writes) is redone, not trusted."""
    out = Path(shutil.copytree(world["ref"], tmp_path / "out"))
    name = sorted((out / "labels").glob("*.tif"))[0].stem
    (out / "records" / f"{name}.json").unlink()
    tifffile.imwrite(out / "labels" / f"{name}.tif", np.zeros((SIZE, SIZE), np.uint16))  # stale content
    assert main(["segment", str(world["model"]), "--experiment", str(world["toml"]), "-o", str(out), "--resume"]) == 0
    assert (out / "labels" / f"{name}.tif").read_bytes() == (world["ref"] / "labels" / f"{name}.tif").read_bytes()
    assert (out / "records" / f"{name}.json").exists()
    assert _cells(out) == _cells(world["ref"])
