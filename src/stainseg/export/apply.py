"""Run a model directory on in-memory planes: the entry point of the host integrations.

napari layers and CellProfiler images arrive as arrays, not files. This module turns them into
the (C, Y, X) stack that :func:`stainseg.segment.stage.segment_array` takes and calls it, with
the tile settings a host may override. It adds no image processing of its own.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["stack_planes", "load_cached", "segment_planes"]

_CACHE: dict[tuple[str, float, str], tuple[Any, Any, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def stack_planes(planes: Sequence[np.ndarray] | np.ndarray, n_channels: int) -> np.ndarray:
    """Arrange host planes as the (C, Y, X) float32 stack a model with ``n_channels`` inputs takes.

    Parameters
    ----------
    planes : ndarray or sequence of ndarray
        One array ((Y, X), (C, Y, X) or (Y, X, C)) or several 2-D planes of the same size, in the
        order of the model's input channels (``MODEL/model.json`` ``input_channels``).
    n_channels : int
        The model's number of input channels.

    Returns
    -------
    ndarray of float32, shape (n_channels, Y, X)

    Raises
    ------
    StainsegError
        Planes of different sizes, or a channel count that differs from the model's.
    """
    from stainseg.io.images import as_float
    from stainseg.segment.stage import as_channels_first

    if isinstance(planes, np.ndarray):
        arrays = [planes]
    else:
        arrays = [np.asarray(p) for p in planes]
    if not arrays:
        raise StainsegError("no image given; select the model's input image(s)")
    if len(arrays) > 1:
        arrays = [np.squeeze(a) for a in arrays]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1 or any(a.ndim != 2 for a in arrays):
            raise StainsegError(f"the input planes must be 2-D and of one size, got shapes {[a.shape for a in arrays]}")
        stack = np.stack(arrays)
    else:
        stack = arrays[0]
    return as_channels_first(as_float(stack), n_channels, "input").astype(np.float32, copy=False)


def load_cached(model_dir: str | Path, device: str = "auto") -> tuple[Any, Any, dict[str, Any]]:
    """The predictor, config and meta of a model directory, loaded once per process.

    The cache key includes the modification time of ``model.pt``, so a retrained model is reloaded.
    """
    from stainseg.modeldir import load_model
    from stainseg.segment.predictor import TorchPredictor

    model_dir = Path(model_dir).expanduser()
    weights = model_dir / "model.pt"
    key = (str(model_dir.resolve()), weights.stat().st_mtime if weights.is_file() else 0.0, device)
    with _LOCK:
        if key not in _CACHE:
            model, cfg, meta = load_model(model_dir)
            predictor = TorchPredictor(model, device=device, bfloat16=cfg.segment.bfloat16)
            _CACHE[key] = (predictor, cfg, meta)
        return _CACHE[key]


class _CountingPredictor:
    """Calls ``progress(tiles_done)`` after every batch the wrapped predictor runs."""

    def __init__(self, predictor: Any, progress: Callable[[int], None]) -> None:
        self.predictor, self.progress, self.done = predictor, progress, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.predictor(batch)
        self.done += int(batch.shape[0])
        self.progress(self.done)
        return out


def segment_planes(model_dir: str | Path, planes: Sequence[np.ndarray] | np.ndarray, tile_size: Optional[int] = None,
                   two_pass: Optional[bool] = None, threshold: Optional[float] = None, device: str = "auto",
                   progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Segment in-memory planes with a model directory (what ``stainseg segment`` does to a file).

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``stainseg train``.
    planes : ndarray or sequence of ndarray
        The model's input channels, raw (see :func:`stack_planes`); any intensity scale.
    tile_size, two_pass, threshold : optional
        Override the model's ``[segment]`` settings (None keeps the model's value).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : callable, optional
        Called with the number of tiles done after every batch (from the calling thread).

    Returns
    -------
    dict
        :func:`stainseg.segment.stage.segment_array`'s result: ``labels`` (Y, X), ``probability``
        (K, Y, X), ``uncertainty`` (Y, X) or None, ``timings``; plus ``meta`` (``model.json``).
    """
    from stainseg.segment.stage import segment_array

    predictor, cfg, meta = load_cached(model_dir, device)
    stack = stack_planes(planes, int(meta["in_channels"]))
    cfg = copy.deepcopy(cfg)
    if tile_size is not None:
        if int(tile_size) < 16:
            raise StainsegError(f"tile size {tile_size} is too small; use at least 16 (the model default is {cfg.segment.tile_size})")
        cfg.segment.tile_size = int(tile_size)
    if two_pass is not None:
        cfg.segment.two_pass = bool(two_pass)
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise StainsegError(f"threshold {threshold} must lie between 0 and 1")
        cfg.segment.threshold = float(threshold)
    run_with = _CountingPredictor(predictor, progress) if progress is not None else predictor
    result = segment_array(stack, run_with, cfg, meta)
    result["meta"] = meta
    return result
