"""The block-wise route of ``stainseg segment`` for one task: which inputs take it, and its outputs and record.

:mod:`stainseg.stages.segment` asks :func:`blockwise_inputs` for every task; a task whose input is a
zarr, or whose planes have more than ``[segment] blockwise_pixels`` pixels, is not read whole but
segmented by :func:`stainseg.segment.blockwise.segment_blockwise` in :func:`run_blockwise_task`:
``OUT/labels/<name>.ome.zarr``, ``OUT/records/<name>.csv`` (one row per object, measured band by band)
and the record that becomes its ``index.csv`` row (``label_file`` names the ``.ome.zarr``,
``blockwise`` is True), written last, so that ``--resume`` skips only finished images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from stainseg.io.atomic import write_csv, write_json

__all__ = ["blockwise_inputs", "run_blockwise_task"]


def blockwise_inputs(task: dict[str, Any], model: Any) -> Optional[list[str]]:
    """The input files of a segment task when it must be segmented block-wise, else None (only headers are read).

    Examples
    --------
    >>> from stainseg.model import Model
    >>> blockwise_inputs({"path": "absent.png"}, Model.new(["DNA"])) is None
    True
    """
    from stainseg.segment.blockwise import needs_blockwise

    if task.get("channels"):
        paths = [p for ch in model.input_channels for p in task["channels"].get(ch, [])]
    else:
        paths = [task["path"]]
    if not paths or not all(Path(p).exists() for p in paths):
        return None
    return [str(p) for p in paths] if needs_blockwise(paths, model.segment_settings.blockwise_pixels) else None


def run_blockwise_task(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """Segment a task's input block-wise and write its object table and record; returns the record.

    ``state`` holds ``task`` (as :mod:`stainseg.stages.segment` builds it), ``blockwise`` (the
    input files) and ``timings``.
    """
    from stainseg.segment.blockwise import segment_blockwise

    task = state["task"]
    out, name = Path(task["out"]), task["name"]
    paths = state["blockwise"]
    result = segment_blockwise(model, paths if len(paths) > 1 else paths[0], out, name=name,
                               save_probability=bool(task["save_probability"]), save_uncertainty=bool(task["save_uncertainty"]),
                               skip_flagged=bool(task.get("skip_flagged")))
    t0 = time.perf_counter()
    cells = result.cells
    write_csv(out / "records" / f"{name}.csv", cells, columns=list(cells[0]) if cells else ["image", "label"])
    timings = {**state["timings"], **result.timings, "write_s": time.perf_counter() - t0}
    flags = result.flags
    record = {"name": name, **task.get("fields", {}), "cells": len(cells), "label_file": str(result.labels_path),
              "sources": ";".join(paths), "shape": "x".join(map(str, result.shape)),
              "flags": ";".join(f.code for f in flags), "flag_reasons": " | ".join(f.reason for f in flags),
              "skipped": result.skipped, "engine": model.engine().engine, "blockwise": True,
              **{k: round(v, 4) for k, v in timings.items()}}
    write_json(out / "records" / f"{name}.json", record)
    return record
