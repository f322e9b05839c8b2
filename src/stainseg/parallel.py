"""Map one per-image-set function over many image sets: serially, on a local Dask cluster, or on an existing one.

The function receives small, picklable task descriptions (paths and plain dicts), reads its own
images from shared storage and writes its own outputs atomically; only small result dicts travel
back through the scheduler. A failing task is retried, then reported — never silently dropped.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm import tqdm

from stainseg.errors import StainsegError


@dataclass
class MapResult:
    """Results in input order (``None`` where a task failed) and the failures as (name, one-line reason)."""

    results: list[dict[str, Any] | None]
    failed: list[tuple[str, str]] = field(default_factory=list)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, StainsegError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _guarded(func: Callable[[dict[str, Any]], dict[str, Any]], task: dict[str, Any]) -> dict[str, Any]:
    """Run one task; bad input becomes a result with an error instead of an exception (no retry helps)."""
    try:
        return func(task)
    except StainsegError as exc:
        return {"_error": str(exc)}


def map_tasks(
    func: Callable[[dict[str, Any]], dict[str, Any]],
    tasks: Sequence[dict[str, Any]],
    names: Sequence[str],
    workers: int = 0,
    scheduler: str | None = None,
    retries: int = 2,
    desc: str = "",
    progress: bool = True,
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
        How often Dask retries a task whose worker died or raised an unexpected error.
    """
    if len(tasks) != len(names):
        raise ValueError("tasks and names differ in length")
    if not tasks:
        return MapResult(results=[])
    if scheduler is None and workers <= 0:
        return _map_serial(func, tasks, names, desc, progress)
    return _map_dask(func, tasks, names, workers, scheduler, retries, desc, progress)


def _map_serial(func, tasks, names, desc, progress) -> MapResult:
    out = MapResult(results=[])
    for task, name in tqdm(list(zip(tasks, names)), desc=desc, disable=not progress, unit="set", file=sys.stderr):
        try:
            result = _guarded(func, task)
        except Exception as exc:  # an unexpected failure of one item must not stop the batch
            result = {"_error": _one_line(exc), "_traceback": traceback.format_exc()}
        _collect(out, name, result)
    return out


def _collect(out: MapResult, name: str, result: dict[str, Any] | None) -> None:
    if result is not None and "_error" in result:
        out.failed.append((name, result["_error"]))
        out.results.append(None)
    else:
        out.results.append(result)


def _map_dask(func, tasks, names, workers, scheduler, retries, desc, progress) -> MapResult:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise StainsegError("dask.distributed is not installed; pip install distributed, or run without --workers") from None
    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise StainsegError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it with `dask scheduler` or fix --scheduler") from None
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        with client:
            futures = client.map(_guarded, [func] * len(tasks), list(tasks), key=[f"stainseg-{desc}-{i}-{n}" for i, n in enumerate(names)],
                                 retries=retries, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            results: list[dict[str, Any] | None] = [None] * len(tasks)
            with tqdm(total=len(tasks), desc=desc, disable=not progress, unit="set", file=sys.stderr) as bar:
                for fut in as_completed(futures):
                    i = index[fut.key]
                    try:
                        results[i] = fut.result()
                    except Exception as exc:
                        results[i] = {"_error": _one_line(exc)}
                    bar.update(1)
        out = MapResult(results=[])
        for name, result in zip(names, results):
            _collect(out, name, result)
        return out
    finally:
        if cluster is not None:
            cluster.close()
