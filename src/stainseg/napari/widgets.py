"""napari widgets: segment image layers with a stainseg model (in a worker thread, with progress),
and make automatic labels from a stain layer. They call :mod:`stainseg.napari.core`.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import napari
import numpy as np
from magicgui import magic_factory
from magicgui.widgets import Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, Select, SpinBox

from stainseg.errors import StainsegError
from stainseg.napari.core import automatic_labels, model_summary, segment_layers

__all__ = ["SegmentWidget", "groundtruth_widget", "segment_job"]


def segment_job(model_dir: str | Path, images: Sequence[np.ndarray], tile_size: int = 0,
                threshold: float = 0.0) -> Iterator[int]:
    """Generator for a napari worker: yields tiles done, returns the labels.

    The segmentation runs in a helper thread; this generator relays its progress so that the
    worker can emit it to the GUI thread.
    """
    done: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["labels"] = segment_layers(model_dir, images, tile_size, threshold, progress=done.put)
        except BaseException as exc:  # handed to the worker's errored signal below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="stainseg-segment", daemon=True)
    thread.start()
    while thread.is_alive() or not done.empty():
        try:
            yield done.get(timeout=0.05)
        except queue.Empty:
            continue
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["labels"]


class SegmentWidget(Container):
    """Choose a model folder and the image layer(s) of its input channels (in order); adds a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Given by napari.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self.viewer = napari_viewer
        self.model_dir = FileEdit(label="model folder", mode="d", value="")
        self.images = Select(label="input layer(s)", choices=self._image_choices)
        self.tile_size = SpinBox(label="tile size (0 = model's)", value=0, min=0, max=4096, step=16)
        self.threshold = FloatSpinBox(label="threshold (0 = model's)", value=0.0, min=0.0, max=0.99, step=0.05)
        self.run_button = PushButton(text="Segment")
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1, visible=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.model_dir, self.images, self.tile_size, self.threshold, self.run_button,
                                  self.progress, self.status])
        self.worker: Optional[Any] = None
        self.model_dir.changed.connect(self._describe_model)
        self.run_button.changed.connect(self.run)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda _event: self.images.reset_choices())

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _describe_model(self, value: Any = None) -> None:
        try:
            self.status.value = model_summary(self.model_dir.value)
        except (StainsegError, OSError) as exc:
            self.status.value = str(exc)

    def run(self, _value: Any = None) -> Any:
        """Start segmenting the selected layers in a worker thread; returns the worker."""
        from napari.qt.threading import create_worker

        layers = list(self.images.value)
        if not layers:
            self.status.value = "select the image layer(s) of the model's input channels"
            return None
        images = [np.asarray(layer.data) for layer in layers]
        name = f"{layers[0].name} stainseg"
        self.run_button.enabled = False
        self.progress.visible, self.progress.max, self.progress.value = True, 0, 0  # busy until tiles are counted
        self.status.value = "segmenting ..."
        worker = create_worker(segment_job, str(self.model_dir.value), images, int(self.tile_size.value),
                               float(self.threshold.value), _start_thread=False,
                               _connect={"yielded": self._on_tiles, "errored": self._on_error,
                                         "returned": lambda labels: self._on_done(labels, name, layers[0]),
                                         "finished": lambda: setattr(self.run_button, "enabled", True)})
        self.worker = worker
        worker.start()
        return worker

    def _on_tiles(self, tiles: int) -> None:
        self.status.value = f"segmenting ... {tiles} tiles done"

    def _on_done(self, labels: np.ndarray, name: str, source: Any) -> None:
        self.progress.max, self.progress.value = 1, 1
        layer = self.viewer.add_labels(labels, name=name, scale=source.scale[-2:], translate=source.translate[-2:])
        self.status.value = f"{int(labels.max())} objects → layer '{layer.name}'"

    def _on_error(self, exc: BaseException) -> None:
        self.progress.visible = False
        self.status.value = str(exc) if isinstance(exc, StainsegError) else f"failed: {type(exc).__name__}: {exc}"


@magic_factory(
    call_button="Make labels",
    objects={"choices": ["nuclei", "cells"]},
    illumination={"choices": ["spline", "none"]},
    nucleus_diameter={"label": "nucleus diameter (0 = auto)", "min": 0.0, "max": 500.0},
)
def groundtruth_widget(nuclei: "napari.layers.Image", cytoplasm: Optional["napari.layers.Image"] = None,
                       objects: str = "nuclei", nucleus_diameter: float = 0.0,
                       illumination: str = "spline") -> "napari.types.LayerDataTuple":
    """Automatic labels from a nuclear stain layer (and a cytoplasm layer for cells), as in ``stainseg groundtruth``."""
    labels, qc = automatic_labels(np.asarray(nuclei.data), None if cytoplasm is None else np.asarray(cytoplasm.data),
                                  objects, nucleus_diameter, illumination)
    return (labels, {"name": f"{nuclei.name} automatic {objects}", "metadata": {"qc": qc},
                     "scale": nuclei.scale[-2:], "translate": nuclei.translate[-2:]}, "labels")
