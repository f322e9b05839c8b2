"""What the napari widgets compute, as plain functions on numpy arrays (no Qt, no napari)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["segment_layers", "automatic_labels", "model_summary"]


def model_summary(model_dir: str | Path) -> str:
    """One line about a model directory: objects, input channels and their order, tile size."""
    from stainseg.model import Model

    return Model.load_cached(model_dir).describe()


def segment_layers(model_dir: str | Path, images: Sequence[np.ndarray], tile_size: int = 0, threshold: float = 0.0,
                   progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Instance labels of image layers with a model directory.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``stainseg train``.
    images : sequence of ndarray
        Layer data in the order of the model's input channels: one 2-D layer per channel, or
        one layer holding all channels.
    tile_size, threshold : number
        0 keeps the model's setting.
    progress : callable, optional
        Called with the number of tiles done after every batch.

    Returns
    -------
    ndarray, shape (Y, X)
        Instance labels (0 = background).
    """
    from stainseg.export.apply import segment_planes

    if not str(model_dir).strip():
        raise StainsegError("choose a model folder (written by 'stainseg train')")
    result = segment_planes(model_dir, [np.asarray(im) for im in images], tile_size=tile_size or None,
                            threshold=threshold or None, progress=progress)
    return result["labels"]


def automatic_labels(nuclei: np.ndarray, cytoplasm: Optional[np.ndarray] = None, objects: str = "nuclei",
                     nucleus_diameter: float = 0.0, illumination: str = "spline") -> tuple[np.ndarray, dict[str, Any]]:
    """Automatic labels of one field and their quality metrics (the widget shows both); see :func:`stainseg.automatic_labels`."""
    from stainseg.api import automatic_labels as labels_of

    return labels_of(nuclei=nuclei, cytoplasm=cytoplasm, objects=objects, nucleus_diameter=nucleus_diameter or None,
                     illumination=illumination, with_qc=True)
