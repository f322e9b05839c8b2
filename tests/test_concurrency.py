"""Two writers on one output folder: the second `stainseg segment` is refused in one line, the first finishes intact.

The choice (docs/errors.md): one lock per output folder (``OUT/.stainseg.lock``), held with an
OS file lock for the whole run, so a lock left by a killed process is free again at once.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

from stainseg.cli import main
from stainseg.io.lock import LOCK_NAME, folder_lock

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import assert_clean, error_line, make_model  # noqa: E402

STAINSEG = Path(sys.executable).with_name("stainseg")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, object]:
    from stainseg.synth import generate_experiment

    base = tmp_path_factory.mktemp("concurrency")
    toml = generate_experiment(base / "exp", wells=1, sites=1, times=1, size=128, seed=2)
    model = make_model(base / "model", toml, 1)
    plane = sorted((toml.parent / "images").glob("*_z1_BF.tif"))[0]
    images = base / "images"
    images.mkdir()
    paths = []
    for i in range(12):
        path = images / f"img{i:02d}.tif"
        os.link(plane, path)
        paths.append(path)
    return {"model": model, "images": paths}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, "the first process ended before it took the lock"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)


@pytest.mark.skipif(not STAINSEG.exists(), reason="needs the installed stainseg command")
def test_second_segment_on_same_out_is_refused(world, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", str(world["model"]), *map(str, world["images"]), "-o", str(out)]
    first = subprocess.Popen([str(STAINSEG), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / LOCK_NAME, first)
        rc = main(argv)  # the second writer, while the first holds the folder
        line = error_line(capsys.readouterr().err)
        assert rc == 2
        assert str(out) in line and f"pid {first.pid}" in line and "stainseg segment" in line
        assert "choose another -o" in line
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert "Traceback" not in stderr
    # the first run is intact: every image, every label readable, no temporaries, the lock released
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] == 12 and run["failed"] == []
    labels = sorted((out / "labels").glob("*.tif"))
    assert len(labels) == 12
    reference = tifffile.imread(labels[0])
    for path in labels[1:]:
        assert (tifffile.imread(path) == reference).all(), path  # copies of one image: equal label images
    assert_clean(out)


def _contend(folder: str, start, results) -> None:
    """Wait for the start signal, try the lock, hold it a moment when taken."""
    from stainseg.errors import StainsegError

    start.wait()
    try:
        with folder_lock(folder, "contender"):
            results.put(("took", os.getpid()))
            time.sleep(0.5)
    except StainsegError as exc:
        results.put(("refused", str(exc)))


@pytest.mark.parametrize("stale", [False, True])
def test_only_one_of_many_simultaneous_writers_gets_the_lock(tmp_path, stale):
    """Eight processes race for one folder (with or without a lock left by a killed process): exactly one wins."""
    if stale:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        import socket

        (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {dead.pid} killed-run")
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), start, results)) for _ in range(8)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    took = [o for o in outcomes if o[0] == "took"]
    assert len(took) == 1, outcomes
    for kind, message in outcomes:
        if kind == "refused":
            assert "is writing to this folder" in message and "\n" not in message
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / LOCK_NAME).write_text(f"{socket.gethostname()} {dead.pid} stainseg segment")
    with folder_lock(tmp_path, "resume") as lock:
        assert str(os.getpid()) in lock.read_text()
    assert not lock.exists()


def test_groundtruth_is_locked_too(tmp_path, capsys):
    """`stainseg groundtruth` takes the same lock: a second writer is refused, and the holder's temporaries survive."""
    from stainseg.synth import generate_experiment

    toml = generate_experiment(tmp_path / "exp", wells=1, sites=1, times=1, size=64, seed=4)
    out = tmp_path / "gt"
    with folder_lock(out, "stainseg segment"):
        live_temp = out / ".index.csv.abcd1234.tmp"  # a live writer's temporary: must not be touched
        live_temp.write_text("being written")
        rc = main(["groundtruth", str(toml), "-o", str(out)])
        line = error_line(capsys.readouterr().err)
        assert rc == 2 and "is writing to this folder" in line and f"pid {os.getpid()}" in line
        assert live_temp.exists()
    live_temp.rename(out / ".index.csv.zzzz9999.tmp")  # now stale: its writer is gone
    assert main(["groundtruth", str(toml), "-o", str(out)]) == 0
    capsys.readouterr()
    assert_clean(out)
