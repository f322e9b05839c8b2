"""Which inference engine runs a model: torch or ONNX Runtime, chosen without importing torch.

Rule of ``[segment] engine`` (also ``stainseg segment --engine``):

- ``"torch"``: always torch (CUDA when the device allows, bf16 where the CPU has it);
- ``"onnx"``: ONNX Runtime on the CPU from the model folder's ``model.onnx`` (an error when the
  folder has none, onnxruntime is missing, or ``device = "cuda"`` is asked for);
- ``"auto"`` (default): torch when a CUDA GPU is used, else ONNX Runtime when the folder has
  ``model.onnx`` and onnxruntime imports, else torch (older folders without ``model.onnx``).

A GPU is looked for without importing torch (``import torch`` alone takes 2-3 s on a laptop):
only when the machine shows an NVIDIA driver and ``CUDA_VISIBLE_DEVICES`` does not hide every
device is torch imported to ask ``torch.cuda.is_available()``. Measured reasons for this default
are in ``docs/results.md`` (engine table) and ``benchmarks/engines.py``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from stainseg.errors import StainsegError

__all__ = ["EngineChoice", "choose_engine", "cuda_possible", "ENGINES"]

ENGINES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class EngineChoice:
    """The engine that runs a model and why (for run.json and logs)."""

    engine: str
    """``"torch"`` or ``"onnx"``."""
    reason: str


def cuda_possible() -> bool:
    """True when a CUDA GPU may be usable: an NVIDIA driver is loaded and not every device is hidden.

    Cheap (no torch import); :func:`choose_engine` confirms with torch only when this is True.

    Examples
    --------
    >>> isinstance(cuda_possible(), bool)
    True
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def choose_engine(setting: str, device: str, onnx_file: Optional[Path]) -> EngineChoice:
    """The engine for an ``engine`` setting, a ``device`` setting and the model's ONNX file (None: none).

    Parameters
    ----------
    setting : {"auto", "torch", "onnx"}
    device : {"auto", "cpu", "cuda"}
    onnx_file : Path or None
        ``MODEL/model.onnx`` when the folder has it (None for an in-memory or older model).

    Examples
    --------
    >>> choose_engine("auto", "cpu", None).engine
    'torch'
    >>> choose_engine("torch", "cpu", Path("model.onnx")).reason
    'engine = "torch"'
    """
    if setting not in ENGINES:
        raise StainsegError(f"engine {setting!r} is not one of {', '.join(ENGINES)}")
    has_onnx = onnx_file is not None and Path(onnx_file).is_file()
    if setting == "torch":
        return EngineChoice("torch", 'engine = "torch"')
    if setting == "onnx":
        if device == "cuda":
            raise StainsegError('engine "onnx" runs on the CPU only but device "cuda" was asked for; use engine "torch" or "auto" for the GPU')
        if not has_onnx:
            raise StainsegError("the model folder has no model.onnx (folders trained before the ONNX engine); "
                                'use engine "torch" or "auto", or write it with Model.load(MODEL).save(NEW_FOLDER)', onnx_file)
        if not onnxruntime_available():
            raise StainsegError('engine "onnx" needs the onnxruntime package; pip install onnxruntime, or use engine "torch"')
        return EngineChoice("onnx", 'engine = "onnx"')
    if device == "cuda":
        return EngineChoice("torch", 'auto: device = "cuda"')
    if device == "auto" and cuda_possible():
        import torch

        if torch.cuda.is_available():
            return EngineChoice("torch", "auto: a CUDA GPU is available")
    if not has_onnx:
        return EngineChoice("torch", "auto: no CUDA GPU, but the model folder has no model.onnx")
    if not onnxruntime_available():
        return EngineChoice("torch", "auto: no CUDA GPU, but onnxruntime is not installed")
    return EngineChoice("onnx", "auto: no CUDA GPU and the model folder has model.onnx")
