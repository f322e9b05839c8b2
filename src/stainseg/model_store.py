"""Making a :class:`stainseg.Model`: an untrained one from the settings of an experiment, one loaded from its folder
(once per process for hosts and workers), and writing one to its folder.

The folder itself (which files, their format, folders of older versions) is :mod:`stainseg.modeldir`,
which knows no ``Model``: :func:`load_model` builds the model from the :class:`~stainseg.modeldir.StoredModel`
it reads, and :func:`save_model` hands it one. The :class:`~stainseg.Model` methods ``new``, ``load``,
``load_cached`` and ``save`` delegate here.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from stainseg.config import ExperimentConfig
from stainseg.preprocess import Preprocessing

__all__ = ["new_model", "load_model", "load_cached", "save_model"]

_CACHE: dict[tuple[str, float, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def new_model(cls: Any, input_channels: Sequence[str], objects: str = "nuclei", cfg: Optional[ExperimentConfig] = None,
              plane_names: Optional[Sequence[str]] = None, in_channels: Optional[int] = None) -> Any:
    """An untrained ``cls`` (random weights) with the settings of ``cfg`` (defaults when None).

    The network has one input per name in ``plane_names``, else ``in_channels`` inputs, else one
    per input channel; the preprocessing follows the experiment's ground-truth illumination and
    normalisation settings.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> new_model(Model, ["BF1", "BF2"], in_channels=3).plane_names
    ['in0', 'in1', 'in2']
    """
    from stainseg.network import StainNet

    cfg = copy.deepcopy(cfg) if cfg is not None else ExperimentConfig(objects=objects)  # type: ignore[arg-type]
    cfg.model.in_channels = len(plane_names) if plane_names else int(in_channels or len(input_channels))
    gt = cfg.groundtruth
    pre = Preprocessing(illumination="spline" if gt.illumination == "spline" else "none", spline_grid=gt.spline_grid,
                        spline_iterations=gt.spline_iterations, normalization=cfg.preprocess.normalization)
    return cls(StainNet(cfg.model), input_channels, objects=cfg.objects,
               preprocessing=pre, segment=copy.deepcopy(cfg.segment), experiment=cfg if cfg.root else None,
               plane_names=plane_names)


def load_model(cls: Any, path: str | Path, device: str = "auto", engine: Optional[str] = None) -> Any:
    """A ``cls`` from a model folder (:func:`stainseg.modeldir.read_model_dir`); one-line error if it is unusable.

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.model import Model
    >>> folder = save_model(Model.new(["DNA"]), tempfile.mkdtemp() + "/m", onnx=False)
    >>> load_model(Model, folder).onnx_file is None
    True
    """
    from stainseg.modeldir import read_model_dir

    stored = read_model_dir(path, engine=engine, device=None if device == "auto" else device)
    model = cls(stored.network, stored.input_channels, objects=stored.objects, preprocessing=stored.preprocessing,
                segment=stored.segment_settings, derived=stored.derived, info=stored.info,
                experiment=stored.experiment, history=stored.history, path=stored.path,
                plane_names=stored.plane_names, reference=stored.reference, cell_extent=stored.cell_extent)
    model.onnx_file = stored.onnx_file
    return model


def load_cached(cls: Any, path: str | Path, device: str = "auto", engine: Optional[str] = None) -> Any:
    """``cls.load``, once per process per folder, device and engine (reloaded when ``model.pt`` changes): for hosts and workers.

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.model import Model
    >>> folder = Model.new(["DNA"]).save(tempfile.mkdtemp() + "/m", onnx=False)
    >>> load_cached(Model, folder) is load_cached(Model, folder)
    True
    """
    path = Path(path).expanduser()
    weights = path / "model.pt"
    key = (str(path.resolve()), weights.stat().st_mtime if weights.is_file() else 0.0, device, str(engine))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = cls.load(path, device, engine)
        return _CACHE[key]


def save_model(model: Any, path: str | Path, onnx: bool = True) -> Path:
    """Write ``model``'s folder (every file atomically, :func:`stainseg.modeldir.write_model_dir`); returns the folder.

    With ``onnx`` the folder also gets ``model.onnx``, exported from the network and checked against
    torch to 1e-4. The model's ``path`` and ``onnx_file`` then name what was written.

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.model import Model
    >>> model = Model.new(["DNA"])
    >>> save_model(model, tempfile.mkdtemp() + "/m", onnx=False) == model.path
    True
    """
    from stainseg.modeldir import ONNX_FILE, StoredModel, write_model_dir

    stored = StoredModel(model.network, model.input_channels, model.objects, model.preprocessing, model.segment_settings,
                         derived=model.derived, info=model.info, history=model.history, plane_names=model.plane_names,
                         reference=model.reference, experiment=model.experiment,
                         cell_extent=None if model.cell_extent is None else model.cell_extent.to_dict())
    model.path = write_model_dir(stored, path, onnx=onnx)
    onnx_file = model.path / ONNX_FILE
    model.onnx_file = onnx_file if onnx_file.is_file() else None
    model.engine_choice = None
    return model.path
