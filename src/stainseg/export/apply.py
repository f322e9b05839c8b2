"""Run a model folder on in-memory planes: the entry point of the host integrations (napari, CellProfiler).

A thin layer over :class:`stainseg.Model`: the model is loaded once per process
(:meth:`Model.load_cached`) and :meth:`Model.run` does the rest, exactly as ``stainseg segment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["segment_planes"]


def segment_planes(model_dir: str | Path, planes: Sequence[np.ndarray] | np.ndarray, tile_size: Optional[int] = None,
                   two_pass: Optional[bool] = None, threshold: Optional[float] = None, device: str = "auto",
                   progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Segment in-memory planes with a model folder (what ``stainseg segment`` does to a file).

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``stainseg train``.
    planes : ndarray or sequence of ndarray
        The model's input channels, raw: one array ((Y, X), (C, Y, X) or (Y, X, C)) or several
        2-D planes in the order of the model's input planes; any intensity scale.
    tile_size, two_pass, threshold : optional
        Override the model's settings (None keeps the model's value).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress : callable, optional
        Called with the number of tiles done after every batch.

    Returns
    -------
    dict
        :meth:`stainseg.Model.run`'s result: ``labels`` (Y, X), ``probability`` (K, Y, X),
        ``uncertainty`` (Y, X) or None, ``timings``; plus ``model`` (the :class:`~stainseg.Model`). For a model of
        cells grown from nuclei (``model.network_objects == "nuclei"``), ``labels`` are the cells and ``nuclei``
        (Y, X) the network's nuclei.
    """
    from stainseg.model import Model

    model = Model.load_cached(model_dir, device)
    arrays = planes if isinstance(planes, np.ndarray) else [np.asarray(p) for p in planes]
    result = model.run(arrays, progress=progress, tile_size=tile_size, two_pass=two_pass, threshold=threshold)
    result["model"] = model
    return result
