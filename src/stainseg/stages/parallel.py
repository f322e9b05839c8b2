"""Map one per-image-set function over many image sets: serially, on a local Dask cluster, or on an existing one.

The function receives small, picklable task descriptions (paths and plain dicts), reads its own
images from shared storage and writes its own outputs atomically; only small result dicts travel
back through the scheduler. A failing task is retried, then reported — never silently dropped.
Expensive per-process state (the loaded model) is cached by the task function in its worker
process and counted with :func:`note_load`, so a run can show that it was loaded once per worker.
See docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from stainseg.errors import StainsegError
from stainseg.stages.progress import progress_bar

# Per-process counters (one set in each Dask worker process, one here for serial runs).
_LOADS: Counter[str] = Counter()
_TASKS: Counter[str] = Counter()


@dataclass
class MapResult:
    """Results in input order (``None`` where a task failed) and the failures as (name, one-line reason).

    ``workers`` maps each process that ran tasks (a Dask worker address, or ``"local"``) to
    ``{"host", "pid", "tasks", "loads"}``: the task attempts of this run it made (retries included) and how often each
    expensive object (e.g. ``"model /path"``) was loaded in that process in its lifetime.
    """

    results: list[dict[str, Any] | None]
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)


def note_load(what: str) -> None:
    """Count one load of an expensive per-process object (call it where the object is built)."""
    _LOADS[what] += 1


def process_report(run_id: str = "") -> dict[str, Any]:
    """This process's host, pid, tasks completed for ``run_id`` and loads so far."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "tasks": _TASKS[run_id], "loads": dict(_LOADS)}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, StainsegError):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0] if text else type(exc).__name__


def _guarded(func: Callable[[dict[str, Any]], dict[str, Any]], task: dict[str, Any], run_id: str = "") -> dict[str, Any]:
    """Run one task; bad input becomes a result with an error instead of an exception (no retry helps)."""
    _TASKS[run_id] += 1  # attempts in this process, retries included
    try:
        return func(task)
    except StainsegError as exc:
        return {"_error": str(exc)}


def _check_worker(paths: Sequence[str]) -> list[str]:
    """Runs on each worker: the given paths it cannot see (shared storage check)."""
    return [p for p in paths if not os.path.exists(p)]


def map_tasks(
    func: Callable[[dict[str, Any]], dict[str, Any]],
    tasks: Sequence[dict[str, Any]],
    names: Sequence[str],
    workers: int = 0,
    scheduler: str | None = None,
    retries: int = 2,
    desc: str = "",
    progress: bool = True,
    shared: Sequence[str] = (),
    no_worker_timeout: float = 300.0,
    stages: tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], dict[str, Any]]] | None = None,
) -> MapResult:
    """Run ``func(task)`` for every task and collect the results.

    Parameters
    ----------
    func : callable
        A module-level function (picklable) taking one task dict and returning a small dict.
    tasks, names : sequences
        The task descriptions and a display name for each (for progress and failure reports).
    workers : int
        0 = run here, serially. N > 0 = start a ``LocalCluster`` with N single-threaded worker processes.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); overrides ``workers``.
    retries : int
        How often Dask retries a task that raised an unexpected error. A task whose worker died is
        re-run elsewhere by the scheduler (up to ``distributed.scheduler.allowed-failures`` times)
        and then reported as failed.
    desc : str
        Label of the progress bar (completed / total and the time left, on stderr; the time left leaves the
        start-up of the first item, or of each worker's first, out: :mod:`stainseg.stages.progress`).
    progress : bool
        Show the progress bar and a one-line summary of the workers.
    shared : sequence of str
        Paths every worker must see (shared storage); checked on each worker before the run.
    no_worker_timeout : float
        Give up (reporting the unfinished tasks as failed) when the cluster has had no worker for this many seconds.
    stages : (load, compute, finish), optional
        ``func`` split in three, ``func(task) == finish(compute(load(task)))``. A serial run then
        overlaps them: the next task loads and the previous one finishes in two threads while
        the current one computes (numpy, scipy and torch release the GIL). Dask runs use ``func``.

    Returns
    -------
    MapResult
    """
    if len(tasks) != len(names):
        raise ValueError("tasks and names differ in length")
    if not tasks:
        return MapResult(results=[])
    if scheduler is None and workers <= 0:
        if stages is not None:
            return _map_overlapped(stages, tasks, names, desc, progress)
        return _map_serial(func, tasks, names, desc, progress)
    return _map_dask(func, tasks, names, workers, scheduler, retries, desc, progress, shared, no_worker_timeout)


def _map_serial(func, tasks, names, desc, progress) -> MapResult:
    out = MapResult(results=[])
    run_id = uuid.uuid4().hex
    bar = progress_bar(len(tasks), desc, disable=not progress)
    for task, name in zip(tasks, names):
        try:
            result = _guarded(func, task, run_id)
        except Exception as exc:  # an unexpected failure of one item must not stop the batch
            result = {"_error": _one_line(exc), "_traceback": traceback.format_exc()}
        _collect(out, name, result)
        bar.update(1)
    bar.close()
    out.workers = {"local": process_report(run_id)}
    return out


def _map_overlapped(stages, tasks, names, desc, progress) -> MapResult:
    """Serial run with three tasks in flight: loading task i+1, computing task i, finishing task i-1.

    A task counts on the progress bar as soon as its finish stage is done (its outputs are written), not
    when the next task's computation ends: else the bar lags one task behind and its first update
    holds two tasks' computation (the time left then read about twice the truth).
    """
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    load, compute, finish = stages
    out = MapResult(results=[])
    run_id = uuid.uuid4().hex
    bar = progress_bar(len(tasks), desc, disable=not progress)
    counted: set[Future] = set()
    count_lock = threading.Lock()

    def count(future: Future) -> None:  # once per task: from the finisher's callback, or at collection if that ran first
        with count_lock:
            if future not in counted:
                counted.add(future)
                bar.update(1)

    def guarded(step: Callable[[Any], Any], value: Any) -> Any:
        if isinstance(value, dict) and "_error" in value:
            return value  # an earlier stage of this task failed
        try:
            return step(value)
        except StainsegError as exc:
            return {"_error": str(exc)}
        except Exception as exc:  # an unexpected failure of one item must not stop the batch
            return {"_error": _one_line(exc), "_traceback": traceback.format_exc()}

    def collect(name: str, future: Future) -> None:
        result = future.result()
        count(future)
        _TASKS[run_id] += 1
        _collect(out, name, result)

    with ThreadPoolExecutor(1, thread_name_prefix="load") as loader, ThreadPoolExecutor(1, thread_name_prefix="finish") as finisher:
        loading: Future = loader.submit(guarded, load, tasks[0])
        finishing: tuple[str, Future] | None = None
        for i, name in enumerate(names):
            loaded = loading.result()
            if i + 1 < len(tasks):
                loading = loader.submit(guarded, load, tasks[i + 1])
            computed = guarded(compute, loaded)
            del loaded
            if finishing is not None:
                collect(*finishing)
            finishing = (name, finisher.submit(guarded, finish, computed))
            finishing[1].add_done_callback(count)
            del computed
        if finishing is not None:
            collect(*finishing)
    bar.close()
    out.workers = {"local": process_report(run_id)}
    return out


def _collect(out: MapResult, name: str, result: dict[str, Any] | None) -> None:
    if result is not None and "_error" in result:
        out.failed.append((name, result["_error"]))
        out.results.append(None)
    else:
        out.results.append(result)


def _probe(scheduler: str) -> None:
    """Fail at once (not after the client's 20 s of retries) when nothing listens at a tcp:// address."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    protocol, loc = parse_address(scheduler)
    if protocol in ("tcp", "tls"):
        host, port = parse_host_port(loc)
        with socket.create_connection((host, port), timeout=10):
            pass


def _connect(workers: int, scheduler: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            _probe(scheduler)
            return Client(scheduler, timeout="20s"), None
        except (OSError, asyncio.TimeoutError) as exc:
            raise StainsegError(f"cannot reach the Dask scheduler at {scheduler} ({_one_line(exc)}); "
                                "start it with `dask scheduler` or fix --scheduler") from None
        except ValueError as exc:
            raise StainsegError(f"--scheduler {scheduler!r} is not a Dask address ({exc}); give e.g. tcp://host:8786") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def _preflight(client, shared: Sequence[str], scheduler: str | None, no_worker_timeout: float) -> None:
    """Wait for a first worker, then check every worker can import stainseg and see the shared paths."""
    try:
        client.wait_for_workers(1, timeout=no_worker_timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise StainsegError(f"the Dask scheduler {scheduler} has no workers; start some with `dask worker {scheduler}`") from None
    try:
        missing = client.run(_check_worker, list(shared))
    except Exception as exc:  # the worker could not unpickle a stainseg function
        raise StainsegError(f"a Dask worker cannot run stainseg ({_one_line(exc)}); install the same stainseg "
                            "version in the workers' Python environment") from None
    for addr, paths in missing.items():
        if paths:
            raise StainsegError(f"Dask worker {addr} cannot see {paths[0]}; inputs and outputs must be on storage "
                                "shared by all workers, under the same path")


def _has_workers(client) -> bool:
    try:
        return bool(client.nthreads())
    except Exception:  # scheduler unreachable for now: the client reconnects or cancels the futures
        return False


def _map_dask(func, tasks, names, workers, scheduler, retries, desc, progress, shared, no_worker_timeout) -> MapResult:
    try:
        from distributed import as_completed
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise StainsegError("dask.distributed is not installed; pip install distributed, or run without --workers") from None
    client, cluster = _connect(workers, scheduler)
    run_id = uuid.uuid4().hex[:12]
    try:
        _preflight(client, shared, scheduler, no_worker_timeout)
        if progress and scheduler:
            print(f"{desc}: Dask scheduler {scheduler}, {len(client.nthreads())} workers; dashboard {client.dashboard_link}",
                  file=sys.stderr)
        # unique keys per run: two runs on one shared scheduler must never share results
        keys = [f"stainseg-{desc.replace(' ', '_')}-{run_id}-{i}" for i in range(len(tasks))]
        futures = client.map(_guarded, [func] * len(tasks), list(tasks), [run_id] * len(tasks), key=keys,
                             retries=retries, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        done = 0
        pending = as_completed(futures)
        idle_since, checked = None, 0.0
        parallel = sum(client.nthreads().values()) or 1  # tasks in flight at once: each worker's first carries its start-up
        with progress_bar(len(tasks), desc, disable=not progress, parallel=parallel) as bar:
            while done < len(tasks):
                batch = pending.next_batch(block=False)
                if not batch:
                    now = time.monotonic()
                    if now - checked > 2.0:  # is anyone left to run the pending tasks?
                        checked = now
                        if _has_workers(client):
                            idle_since = None
                        elif idle_since is None:
                            idle_since = now
                        elif now - idle_since > no_worker_timeout:
                            break
                    time.sleep(0.01)
                    continue
                for fut in batch:
                    i = index[fut.key]
                    try:
                        results[i] = fut.result()
                    except (Exception, asyncio.CancelledError) as exc:  # KilledWorker, lost scheduler, error after retries
                        results[i] = {"_error": _one_line(exc)}
                    done += 1
                    bar.update(1)
        for i, fut in enumerate(futures):
            if results[i] is None:
                results[i] = {"_error": f"not run: the cluster had no workers for {no_worker_timeout:.0f} s"}
                fut.cancel()
        out = MapResult(results=[])
        for name, result in zip(names, results):
            _collect(out, name, result)
        try:
            reports = client.run(process_report, run_id)
        except Exception:  # a worker may leave while we ask; the report is informative only
            reports = {}
        out.workers = {addr: r for addr, r in reports.items() if r["tasks"]}
        if progress:
            print(f"{desc}: {summary(out)}", file=sys.stderr)
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def summary(result: MapResult) -> str:
    """One line: tasks done, failed, and per worker the tasks run and the loads of expensive objects."""
    parts = []
    for addr, r in sorted(result.workers.items()):
        loads = ", ".join(f"{n}x {k.split(' ')[0]}" for k, n in sorted(r["loads"].items()))
        parts.append(f"{addr} (pid {r['pid']}): {r['tasks']} tasks" + (f", loaded {loads}" if loads else ""))
    ok = sum(r is not None for r in result.results)
    return f"{ok} done, {len(result.failed)} failed; " + "; ".join(parts)
