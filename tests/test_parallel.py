"""parallel.map_tasks: serial and Dask paths; a real `dask scheduler` + 2 `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stainseg.errors import StainsegError
from stainseg.stages.parallel import MapResult, map_tasks, note_load, summary

BIN = Path(sys.executable).parent
_CACHE: dict[str, float] = {}


def _square(task: dict) -> dict:
    """A task with an expensive per-process object (built once, counted) and a few failure modes."""
    if "table" not in _CACHE:
        _CACHE["table"] = 1.0
        note_load("table test")
    if task.get("bad"):
        raise StainsegError("bad input", task["bad"])
    if task.get("flaky"):  # fails on its first attempt only (a file remembers the attempt)
        marker = Path(task["flaky"])
        if not marker.exists():
            marker.write_text("tried")
            raise RuntimeError("transient failure")
    if task.get("broken"):
        raise ValueError("always broken\nsecond line")
    return {"name": task["name"], "value": task["x"] ** 2, "pid": os.getpid()}


def _tasks(n: int, **extra) -> tuple[list[dict], list[str]]:
    names = [f"set{i:02d}" for i in range(n)]
    return [{"name": nm, "x": i, **extra.get(nm, {})} for i, nm in enumerate(names)], names


def test_serial_keeps_order_and_reports_failures(tmp_path):
    tasks, names = _tasks(6, set02={"bad": str(tmp_path / "a.tif")}, set04={"broken": True})
    result = map_tasks(_square, tasks, names, progress=False)
    assert isinstance(result, MapResult)
    assert [r["value"] if r else None for r in result.results] == [0, 1, None, 9, None, 25]
    assert result.failed == [("set02", f"{tmp_path / 'a.tif'}: bad input"), ("set04", "ValueError: always broken")]
    local = result.workers["local"]
    assert local["pid"] == os.getpid() and local["tasks"] == 6 and local["loads"]["table test"] == 1
    assert "4 done, 2 failed" in summary(result)


def test_empty_and_mismatched_inputs():
    assert map_tasks(_square, [], [], workers=2).results == []
    with pytest.raises(ValueError):
        map_tasks(_square, [{"x": 1}], [], progress=False)


def test_unreachable_scheduler_is_one_line_error():
    with pytest.raises(StainsegError, match="cannot reach the Dask scheduler"):
        map_tasks(_square, *_tasks(1), scheduler=f"tcp://127.0.0.1:{_free_port()}", progress=False)


def test_local_cluster_retries_reports_and_loads_once_per_worker(tmp_path, capfd):
    tasks, names = _tasks(12, set03={"flaky": str(tmp_path / "flaky")}, set05={"broken": True},
                          set07={"bad": "x.tif"})
    result = map_tasks(_square, tasks, names, workers=2, retries=1, desc="unit", shared=[str(tmp_path)])
    values = [r["value"] if r else None for r in result.results]
    assert values == [i * i if i not in (5, 7) else None for i in range(12)]  # set03 succeeded on its retry
    assert dict(result.failed) == {"set05": "ValueError: always broken", "set07": "x.tif: bad input"}
    assert (tmp_path / "flaky").exists()
    pids = {r["pid"] for r in result.results if r}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert sum(w["tasks"] for w in result.workers.values()) == 12 + 2  # + the retries of set03 and set05
    assert all(w["loads"] == {"table test": 1} for w in result.workers.values())  # once per worker, not per task
    err = capfd.readouterr().err
    assert "12/12" in err and "10 done, 2 failed" in err


# ----------------------------------------------------------------- a real cluster: scheduler + 2 workers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group started with start_new_session (the worker's nanny and its child too)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=15)


class DaskCluster:
    """`dask scheduler` and `dask worker` subprocesses on 127.0.0.1, stopped by :meth:`close`."""

    def __init__(self, workdir: Path, n_workers: int = 2) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        try:
            self.procs.append(self._start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                                        "--port", str(self.port), "--no-dashboard"]))
            for i in range(n_workers):
                w = self._start(f"worker{i}", [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1",
                                               "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                               "--death-timeout", "30", "--name", f"w{i}"])
                self.procs.append(w)
                self.workers.append(w)
            from distributed import Client

            with Client(self.address, timeout="30s") as client:
                client.wait_for_workers(n_workers, timeout=90)
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        # another working directory than the client: every path in a task must be absolute
        return subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """24 image sets (2 wells x 3 sites x 4 times), a seeded random model and the serial reference labels."""
    import torch

    from stainseg.config import ModelConfig, load_config
    from stainseg.model import Model
    from stainseg.stages.segment import segment_experiment
    from stainseg.synth import generate_experiment
    from stainseg.network import StainNet

    root = tmp_path_factory.mktemp("parallel")
    toml = generate_experiment(root / "exp", wells=2, sites=3, times=4, size=128, seed=0)
    cfg = load_config(toml)
    cfg.model.in_channels = 3
    cfg.segment.tile_size, cfg.segment.two_pass = 128, False  # one tile per image: keeps the test short
    cfg.segment.bfloat16, cfg.segment.device = False, "cpu"  # float32: identical in every process
    torch.manual_seed(0)
    Model.new(["BF"], cfg=cfg, in_channels=3).save(root / "model")
    serial = segment_experiment(root / "model", toml, root / "serial")
    assert len(serial.rows) == 24 and not serial.failed
    return root, toml, {r["name"]: _labels(r["label_file"]) for r in serial.rows}


def _labels(path) -> np.ndarray:
    from stainseg.io.images import read_labels

    return read_labels(path)


def _segment_cli(root: Path, toml: Path, out: Path, scheduler: str, *extra: str) -> subprocess.Popen:
    cmd = [str(BIN / "stainseg"), "segment", str(root / "model"), "--experiment", str(toml), "-o", str(out),
           "--scheduler", scheduler, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _check_identical(out: Path, reference: dict[str, np.ndarray]) -> None:
    from stainseg.io.atomic import read_csv

    rows = read_csv(out / "index.csv")
    assert sorted(r["name"] for r in rows) == sorted(reference)
    for r in rows:
        np.testing.assert_array_equal(_labels(out / "labels" / f"{r['name']}.tif"), reference[r["name"]], err_msg=r["name"])
    run = json.loads((out / "run.json").read_text())
    assert run["completed"] == 24 and run["failed"] == []


@pytest.mark.slow
def test_scheduler_two_workers_identical_to_serial(experiment, tmp_path):
    import zarr

    root, toml, reference = experiment
    cluster = DaskCluster(tmp_path)
    try:
        proc = _segment_cli(root, toml, tmp_path / "out", cluster.address, "--format", "ome-zarr")
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        _stop(proc) if "proc" in locals() else None
        cluster.close()
    assert proc.returncode == 0, stderr[-2000:]
    assert "segmented 24 images" in stdout
    assert "24/24" in stderr  # progress: completed / total
    line = [ln for ln in stderr.splitlines() if "done," in ln][-1]
    assert line.count("loaded 1x model") == 2, line  # both workers worked, each loaded the model once
    _check_identical(tmp_path / "out", reference)
    plate = zarr.open_group(str(tmp_path / "out" / "labels.ome.zarr"), mode="r")
    assert [w["path"] for w in plate.attrs["plate"]["wells"]] == ["A/1", "A/2"]
    for name, labels in reference.items():  # A01_s2_t03 -> well A/1, field 1, t 3
        well, site, t = name.split("_")
        np.testing.assert_array_equal(plate[f"A/{int(well[1:])}/{int(site[1:]) - 1}/0"][int(t[1:])], labels)


@pytest.mark.slow
def test_killed_worker_run_still_complete_and_identical(experiment, tmp_path):
    root, toml, reference = experiment
    cluster = DaskCluster(tmp_path)
    out = tmp_path / "out"
    try:
        proc = _segment_cli(root, toml, out, cluster.address)
        deadline = time.monotonic() + 180
        while len(list((out / "labels").glob("*.tif"))) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
            time.sleep(0.05)
        done_at_kill = len(list((out / "labels").glob("*.tif")))
        os.killpg(cluster.workers[0].pid, signal.SIGKILL)  # the worker, its nanny, mid-run: a machine lost
        cluster.workers[0].wait(timeout=15)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        _stop(proc) if "proc" in locals() else None
        cluster.close()
    assert done_at_kill < 24
    assert proc.returncode == 0, stderr[-2000:]
    assert "segmented 24 images" in stdout and "failed" not in stdout
    line = [ln for ln in stderr.splitlines() if "done," in ln][-1]
    assert line.startswith("segment: 24 done, 0 failed") and line.count("tasks") == 1, line  # only the survivor is left
    assert "name: w0" in [ln for ln in (tmp_path / "scheduler.log").read_text().splitlines() if "Remove worker" in ln][0]
    _check_identical(out, reference)


def test_scheduler_without_workers_and_unshared_paths_are_one_line_errors(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(StainsegError, match="has no workers"):
            map_tasks(_square, *_tasks(2), scheduler=cluster.scheduler_address, no_worker_timeout=1, progress=False)
        cluster.scale(1)
        with pytest.raises(StainsegError, match="cannot see .*nowhere.*shared by all workers"):
            map_tasks(_square, *_tasks(2), scheduler=cluster.scheduler_address, shared=[str(tmp_path / "nowhere")],
                      progress=False)
        result = map_tasks(_square, *_tasks(3), scheduler=cluster.scheduler_address, shared=[str(tmp_path)], progress=False)
        assert [r["value"] for r in result.results] == [0, 1, 4] and not result.failed
