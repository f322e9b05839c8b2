"""Automatic ground truth from end-point stains (METHOD.md section 1); numpy in, numpy out, no torch.

The names below are loaded on first use (PEP 562), so that segmenting, which needs only
:mod:`stainseg.groundtruth.illumination`, does not import scikit-image's morphology and measure
modules behind :mod:`stainseg.groundtruth.cells` and :mod:`stainseg.groundtruth.nuclei`.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "enhance_cytoplasm": "cells", "segment_cells": "cells",
    "apply_field": "illumination", "background_field": "illumination", "correct_illumination": "illumination",
    "plate_illumination": "illumination",
    "estimate_diameter": "nuclei", "project_z": "nuclei", "segment_nuclei": "nuclei",
    "correct_stain": "pipeline", "groundtruth_for_set": "pipeline", "preview_png": "pipeline",
    "qc_metrics": "qc", "qc_table": "qc",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
