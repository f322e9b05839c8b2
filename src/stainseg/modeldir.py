"""The model folder: how a :class:`stainseg.Model` is stored (like a StarDist / csbdeep model folder).

Files (all written atomically)::

    MODEL/model.pt         network weights (state_dict)
    MODEL/model.onnx       the same network for ONNX Runtime (batch norm folded, checked against torch
                           to 1e-4 when written): segmenting on a CPU runs it without importing torch
    MODEL/model.json       the model's own settings, each stored once: format version, objects, input
                           channels, network, preprocessing with the normalisation statistics of the
                           training images, segmentation settings, settings derived from the training
                           labels, training facts (calibration, quality reference, ...), versions; for
                           cells grown from the nuclei the network finds (``cell_method = "nuclei"``),
                           ``cell_extent``: the recipe and its parameters (folders without it segment
                           the network's objects, as before)
    MODEL/flat_field.npy   (C, Y, X) flat fields of the training images (when they have one size), used instead of
                           the per-image spline fit when the user says the illumination is constant
    MODEL/experiment.toml  provenance: the experiment the model was trained on (loading never reads it)
    MODEL/history.csv      loss and validation score during training (and history.png, the same as a plot)
    MODEL/summary.txt      architecture, parameter count, FLOPs per pixel

A folder without ``model.onnx`` (written before the ONNX engine, or where the export failed)
runs with torch; segmenting never writes into the model folder.

This module is storage only: :func:`read_model_dir` returns the folder's parts as a
:class:`StoredModel` and :func:`write_model_dir` takes one; :class:`stainseg.Model` builds itself
from them (``Model.load``) and hands them over (``Model.save``), so the import runs one way, from
the model to its folder.

Folders written by stainseg 0.1 (``format_version`` 1: ``model.json`` + a whole-experiment
``config.toml``) are read too: their network and ``[segment]`` settings come from ``config.toml``
without validating it as an experiment, and they keep 0.1's per-image normalisation.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

import stainseg
from stainseg.config import ExperimentConfig, ModelConfig, SegmentConfig, save_config
from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path, write_csv, write_json, write_text
from stainseg.preprocess import Preprocessing

__all__ = ["write_model_dir", "read_model_dir", "StoredModel", "FORMAT_VERSION", "LazyNetwork", "ONNX_FILE"]

ONNX_FILE = "model.onnx"
FLAT_FIELD_FILE = "flat_field.npy"

FORMAT_VERSION = 2
RETRAIN = "re-run 'stainseg train EXPERIMENT -o MODEL' to write a model folder this version reads"


@dataclasses.dataclass
class StoredModel:
    """The parts of a model folder as plain values: what :func:`read_model_dir` returns and :func:`write_model_dir` takes.

    ``network`` is a :class:`stainseg.network.StainNet` (or, read for ONNX Runtime, a
    :class:`LazyNetwork`); the other fields are the settings of ``model.json``, the history and the
    provenance record. ``path`` and ``onnx_file`` are set when read from a folder. ``cell_extent`` (plain
    values of :class:`stainseg.groundtruth.extent.CellExtent`, or None) says that the network segments nuclei
    and how they are grown into the cells the model outputs.

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.config import ModelConfig, SegmentConfig
    >>> from stainseg.network import StainNet
    >>> from stainseg.preprocess import Preprocessing
    >>> parts = StoredModel(StainNet(ModelConfig()), ["DNA"], "nuclei", Preprocessing(), SegmentConfig(),
    ...                     derived={}, info={}, history=[], plane_names=["DNA"], reference=None)
    >>> folder = write_model_dir(parts, tempfile.mkdtemp() + "/m", onnx=False)
    >>> back = read_model_dir(folder)
    >>> back.input_channels, back.in_channels, back.segment_settings == parts.segment_settings
    (['DNA'], 1, True)
    """

    network: Any
    input_channels: list[str]
    objects: str
    preprocessing: Preprocessing
    segment_settings: SegmentConfig
    derived: dict[str, Any]
    info: dict[str, Any]
    history: list[dict[str, Any]]
    plane_names: Optional[list[str]]
    reference: Optional[dict[str, Any]]
    experiment: Optional[ExperimentConfig] = None
    path: Optional[Path] = None
    onnx_file: Optional[Path] = None
    cell_extent: Optional[dict[str, Any]] = None

    @property
    def in_channels(self) -> int:
        """Number of network input planes."""
        return int(self.network.in_channels)

    @property
    def n_classes(self) -> int:
        """Number of output classes of the network."""
        return int(self.network.n_classes)

    @property
    def network_config(self) -> ModelConfig:
        """The network's architecture."""
        return self.network.cfg


def _history_plot(path: Path, history: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    def number(value: Any) -> float:  # rows read back from history.csv hold strings ('' when missing)
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    its = [number(row["iteration"]) for row in history]
    ax.plot(its, [number(row["loss"]) for row in history], color="tab:blue", label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted softmax loss", color="tab:blue")
    scores = [number(row.get("val_score")) for row in history]
    if any(np.isfinite(s) for s in scores):
        ax2 = ax.twinx()
        ax2.plot(its, scores, color="tab:orange", marker="o", ms=3, label="validation Dice")
        ax2.set_ylabel("validation Dice", color="tab:orange")
        ax2.set_ylim(0, 1)
    ax.set_title("training history")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _settings(model: StoredModel) -> dict[str, Any]:
    import torch

    extent = {"cell_extent": dict(model.cell_extent)} if model.cell_extent is not None else {}
    return {
        "format_version": FORMAT_VERSION,
        "objects": model.objects,
        **extent,
        "input_channels": list(model.input_channels),
        "plane_names": list(model.plane_names),
        "in_channels": model.in_channels,
        "axis_order": "CYX",
        "network": dataclasses.asdict(model.network_config),
        "n_classes": model.n_classes,
        "preprocessing": model.preprocessing.to_dict(),
        "segment": {k: v for k, v in dataclasses.asdict(model.segment_settings).items()},
        "derived": model.derived,
        "quality": model.reference,
        "training": model.info,
        "versions": {"stainseg": stainseg.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def _write_onnx(model: StoredModel, out_dir: Path) -> bool:
    """Write ``MODEL/model.onnx`` (checked against torch); on failure remove any older one and say why on stderr."""
    import sys

    from stainseg.segment.onnx_engine import export_onnx

    target = out_dir / ONNX_FILE
    try:
        export_onnx(model.network, target, model.in_channels)
        return True
    except (StainsegError, ImportError, RuntimeError) as exc:
        if target.exists():
            target.unlink()  # an older export would not match the new weights
        print(f"stainseg: no {ONNX_FILE} written ({' '.join(str(exc).split())[:200]}); the model runs with torch", file=sys.stderr)
        return False


def write_model_dir(model: StoredModel, out_dir: str | Path, onnx: bool = True) -> Path:
    """Write a model's parts as a complete folder (see the module docstring); returns the folder.

    With ``onnx`` the network is also exported to ``model.onnx`` (about 1 s), for segmentation
    without torch on the CPU.
    """
    import torch

    from stainseg.network import describe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(state, tmp)
    if onnx:
        _write_onnx(model, out_dir)
    elif (out_dir / ONNX_FILE).exists():
        (out_dir / ONNX_FILE).unlink()  # would not match the new weights
    settings = _settings(model)
    settings["files"] = {name: _sha256(out_dir / name) for name in ("model.pt", ONNX_FILE) if (out_dir / name).is_file()}
    write_json(out_dir / "model.json", settings)
    flat = model.preprocessing.flat_field
    if flat is not None:
        with atomic_path(out_dir / FLAT_FIELD_FILE) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(flat, np.float32))
    elif (out_dir / FLAT_FIELD_FILE).exists():
        (out_dir / FLAT_FIELD_FILE).unlink()  # from an earlier model in this folder
    if model.experiment is not None:
        save_config(model.experiment, out_dir / "experiment.toml")
    rows = [dict(row) for row in model.history]
    write_csv(out_dir / "history.csv", rows, columns=["iteration", "loss", "learning_rate", "val_score", "elapsed_s"])
    if rows:
        _history_plot(out_dir / "history.png", rows)
    size = model.segment_settings.tile_size
    write_text(out_dir / "summary.txt", describe(model.network, (model.in_channels, size, size)))
    stale = out_dir / "config.toml"  # a 0.1 folder being overwritten: its config would contradict model.json
    if stale.exists():
        stale.unlink()
    return out_dir


def _dataclass_from(cls: type, data: dict[str, Any], where: Path) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StainsegError(f"has an unknown setting {unknown[0]!r} (written by a newer stainseg?); {RETRAIN}", where)
    return cls(**data)


def _v1_settings(model_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """model.json v2 fields of a stainseg 0.1 folder, from its config.toml read leniently (no experiment validation)."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    cfg_path = model_dir / "config.toml"
    if not cfg_path.is_file():
        raise StainsegError(f"is a stainseg 0.1 model folder without its config.toml; {RETRAIN}", model_dir)
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StainsegError(f"is unreadable ({type(exc).__name__}); {RETRAIN}", cfg_path) from None
    gt = data.get("groundtruth", {})
    network = {k: v for k, v in data.get("model", {}).items() if k in {f.name for f in dataclasses.fields(ModelConfig)}}
    network["in_channels"] = int(meta["in_channels"])
    segment = {k: v for k, v in data.get("segment", {}).items() if k in {f.name for f in dataclasses.fields(SegmentConfig)}}
    if meta.get("dilation") is not None:
        segment["dilation"] = int(meta["dilation"])
    training = dict(meta.get("training", {}))
    if "dilation_calibration" in meta:
        training["calibration"] = meta["dilation_calibration"]
    return {
        "objects": meta.get("objects", data.get("objects", "nuclei")),
        "input_channels": meta.get("input_channels") or [f"channel{i}" for i in range(network["in_channels"])],
        "plane_names": training.get("plane_names"),
        "network": network,
        "preprocessing": {"illumination": "spline" if gt.get("illumination", "spline") == "spline" else "none",
                          "spline_grid": gt.get("spline_grid", 5), "spline_iterations": gt.get("spline_iterations", 5),
                          "normalization": "image"},
        "segment": segment,
        "derived": {},
        "training": training,
    }


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_files(model_dir: Path, meta: dict[str, Any], names: Sequence[str]) -> None:
    """The weight files are those model.json was written with (its ``files`` hashes; folders without them are not checked).

    With ONNX Runtime the torch weights are not loaded, so this is what finds a model.pt or model.onnx from another run.
    """
    recorded = meta.get("files") or {}
    for name in names:
        if name in recorded and (model_dir / name).is_file() and _sha256(model_dir / name) != recorded[name]:
            raise StainsegError("weights do not match model.json (this file is from another training run); keep the files of "
                                "one training run together or re-run 'stainseg train'", model_dir / name)


class LazyNetwork:
    """The facts of a saved network (config, inputs, classes) whose torch weights load on first use.

    :class:`stainseg.Model` holds one of these instead of the torch network when the model
    folder is segmented with ONNX Runtime, so that torch is imported only if the network itself
    is asked for (training, export, the torch engine).
    """

    def __init__(self, cfg: ModelConfig, n_classes: int, weights: Path) -> None:
        self.cfg = cfg
        self.in_channels = int(cfg.in_channels)
        self.n_classes = int(n_classes)
        self.weights = weights

    def load(self) -> Any:
        """The torch ``StainNet`` with the saved weights (eval mode); one-line error when they are unusable."""
        return _load_network(self.cfg, self.weights)


def _load_network(network_cfg: ModelConfig, weights_path: Path) -> Any:
    import torch

    from stainseg.network import StainNet

    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, garbage, a pickle that is not a plain state dict ...
        raise StainsegError("weights are corrupt or truncated (not a readable PyTorch state dict); "
                            "copy the model folder again or re-run 'stainseg train'", weights_path) from None
    try:
        network = StainNet(network_cfg)
        network.load_state_dict(state)
    except Exception as exc:  # missing / unexpected keys, shape mismatch
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        reason = (lines[1] if len(lines) > 1 else lines[0])[:160]
        raise StainsegError(f"weights do not match model.json ({reason}); keep model.pt and model.json of one training run "
                            "or re-run 'stainseg train'", weights_path) from None
    return network.eval()


def read_model_dir(model_dir: str | Path, engine: str | None = None, device: str | None = None) -> StoredModel:
    """The parts of a model folder (this version's or stainseg 0.1's); one-line :class:`StainsegError` when it is unusable.

    ``engine`` / ``device`` override the folder's ``[segment]`` settings. When they resolve to
    ONNX Runtime (:func:`stainseg.segment.engine.choose_engine`), the torch weights are not
    read (torch is not imported) until the network itself is used.
    """
    import zipfile

    from stainseg.segment.engine import choose_engine

    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise StainsegError("model folder not found; give the folder written by 'stainseg train -o MODEL'", model_dir)
    meta_path, weights_path = model_dir / "model.json", model_dir / "model.pt"
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise StainsegError("is missing from the model folder; copy the whole folder or re-run 'stainseg train'", path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "in_channels" not in meta:
            raise ValueError("no in_channels")
    except (ValueError, UnicodeDecodeError) as exc:
        raise StainsegError(f"is corrupt ({type(exc).__name__}); re-run 'stainseg train' to rewrite the model folder", meta_path) from None
    version = int(meta.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise StainsegError(f"was written by a newer stainseg (format {version}, this one reads up to {FORMAT_VERSION}); "
                            "upgrade stainseg or retrain with this version", meta_path)
    settings = _v1_settings(model_dir, meta) if version < 2 else meta
    try:
        network_cfg = _dataclass_from(ModelConfig, dict(settings["network"]), meta_path)
        preprocessing = Preprocessing.from_dict(settings["preprocessing"])
        if (model_dir / FLAT_FIELD_FILE).is_file():
            preprocessing.flat_field = np.load(model_dir / FLAT_FIELD_FILE)
        segment = _dataclass_from(SegmentConfig, dict(settings["segment"]), meta_path)
    except (KeyError, TypeError) as exc:
        raise StainsegError(f"lacks or garbles a setting ({exc}); {RETRAIN}", meta_path) from None
    if engine is not None:
        segment.engine = engine
    if device is not None:
        segment.device = device
    onnx_path = model_dir / ONNX_FILE
    choice = choose_engine(segment.engine, segment.device, onnx_path if onnx_path.is_file() else None)
    network: Any
    if choice.engine == "onnx":
        if not zipfile.is_zipfile(weights_path):  # the cheap check of model.pt without torch
            raise StainsegError("weights are corrupt or truncated (not a readable PyTorch state dict); "
                                "copy the model folder again or re-run 'stainseg train'", weights_path)
        _check_files(model_dir, meta, ("model.pt", ONNX_FILE))
        n_classes = int(settings.get("n_classes") or (3 if network_cfg.head == "3class" else 2))
        network = LazyNetwork(network_cfg, n_classes, weights_path)
    else:
        network = _load_network(network_cfg, weights_path)
    history = []
    history_path = model_dir / "history.csv"
    if history_path.is_file():
        from stainseg.io.atomic import read_csv

        history = read_csv(history_path)
    experiment = None  # provenance only: never needed to run the model
    return StoredModel(network, list(settings["input_channels"]), settings["objects"], preprocessing, segment,
                       derived=settings.get("derived", {}), info=settings.get("training", {}), history=history,
                       plane_names=settings.get("plane_names"), reference=settings.get("quality"),
                       experiment=experiment, path=model_dir, onnx_file=onnx_path if onnx_path.is_file() else None,
                       cell_extent=settings.get("cell_extent"))
