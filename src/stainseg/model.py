"""``stainseg.Model``: the one object that knows a trained network and everything needed to run it.

It owns the input preprocessing (:meth:`Model.prepare`, the only implementation: training
prepares its images through it too), the segmentation settings and the settings derived from
the training labels, and it is the one path from raw planes to labels for the CLI, the Python
API, napari, CellProfiler and the bioimage.io export. The folder format is in
:mod:`stainseg.modeldir`.

Examples
--------
>>> import numpy as np
>>> model = Model.new(["DNA"])              # an untrained network, default settings
>>> image = np.random.default_rng(0).gamma(2.0, 50.0, (64, 64))
>>> model.segment(image).shape
(64, 64)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from stainseg.config import ExperimentConfig, ModelConfig, SegmentConfig
from stainseg.errors import StainsegError
from stainseg.model_input import arrange_channels, is_constant
from stainseg.model_run import SEGMENT_OVERRIDES, probability_of, run_settings
from stainseg.preprocess import Preprocessing, prepare

__all__ = ["Model", "arrange_channels", "is_constant", "SEGMENT_OVERRIDES"]


class Model:
    """A trained network with its preprocessing, segmentation settings and derived settings.

    Parameters
    ----------
    network : torch.nn.Module
        A :class:`stainseg.network.StainNet` (weights as trained).
    input_channels : list of str
        The input channel names, in order (an experiment's ``[channels] input``; a channel with
        z-planes gives several network inputs).
    plane_names : list of str, optional
        One name per network input plane (default: the channel names when they are as many,
        else ``in0``, ``in1`` ...).
    objects : {"nuclei", "cells"}
    preprocessing : Preprocessing, optional
    segment : SegmentConfig, optional
        Tile size, passes, threshold, sizes, dilation, device, precision.
    derived : dict, optional
        Statistics of the training labels and the settings derived from them.
    info : dict, optional
        Facts about the training (iterations, images, calibration records, quality reference ...).
    experiment : ExperimentConfig, optional
        Provenance: the experiment the model was trained on (saved as ``experiment.toml``; loading does not need it).
    history : list of dict, optional
        Training history rows.
    reference : dict, optional
        Quality statistics of the training images and labels (:func:`stainseg.quality.reference_statistics`):
        new images are checked against them and flagged in words.
    cell_extent : CellExtent or dict, optional
        Set for ``objects = "cells"`` made from nuclei (``cell_method = "nuclei"``): the network segments
        nuclei, and :meth:`run` grows each into its cell over the label-free planes by this
        :class:`stainseg.groundtruth.extent.CellExtent` (the recipe of the automatic cell labels,
        illumination correction included). None: the network segments the objects themselves.
    """

    def __init__(self, network: Any, input_channels: Sequence[str], objects: str = "nuclei",
                 preprocessing: Optional[Preprocessing] = None, segment: Optional[SegmentConfig] = None,
                 derived: Optional[dict[str, Any]] = None, info: Optional[dict[str, Any]] = None,
                 experiment: Optional[ExperimentConfig] = None, history: Optional[list[dict[str, Any]]] = None,
                 path: Optional[Path] = None, plane_names: Optional[Sequence[str]] = None,
                 reference: Optional[dict[str, Any]] = None, cell_extent: Any = None) -> None:
        self._network = network
        self.onnx_file: Optional[Path] = None
        """``MODEL/model.onnx`` of the folder this model was loaded from or saved to (None: none, or the network changed since)."""
        self.engine_choice: Any = None
        """How :meth:`load` resolved the engine (:class:`stainseg.segment.engine.EngineChoice`), or None."""
        self.input_channels = list(input_channels)
        if not self.input_channels:
            raise StainsegError("a model needs at least one input channel name")
        if plane_names is None:
            plane_names = self.input_channels if len(self.input_channels) == self.in_channels else [f"in{i}" for i in range(self.in_channels)]
        self.plane_names = list(plane_names)
        if len(self.plane_names) != self.in_channels:
            raise StainsegError(f"{len(self.plane_names)} plane names for a network with {self.in_channels} inputs")
        self.objects = objects
        self.preprocessing = preprocessing or Preprocessing()
        self.segment_settings = segment or SegmentConfig()
        self.derived = dict(derived or {})
        self.info = dict(info or {})
        self.experiment = experiment
        self.history = list(history or [])
        self.path = path
        self.reference = reference
        self.cell_extent: Any = None
        if cell_extent is not None:
            from stainseg.groundtruth.extent import CellExtent

            self.cell_extent = cell_extent if isinstance(cell_extent, CellExtent) else CellExtent.from_dict(cell_extent, path)
            if objects != "cells":
                raise StainsegError(f"a cell extent grows nuclei into cells, but the model's objects are {objects!r}", path)
        self._predictor: Any = None
        self._predictor_key: Any = None

    # ------------------------------------------------------------------ construction (stainseg.model_store)
    @classmethod
    def new(cls, input_channels: Sequence[str], objects: str = "nuclei", cfg: Optional[ExperimentConfig] = None,
            plane_names: Optional[Sequence[str]] = None, in_channels: Optional[int] = None) -> "Model":
        """An untrained model (random weights) with the settings of ``cfg`` (defaults when None).

        The network has one input per name in ``plane_names``, else ``in_channels`` inputs, else
        one per input channel (:func:`stainseg.model_store.new_model`).

        Examples
        --------
        >>> Model.new(["BF1", "BF2"]).in_channels
        2
        """
        from stainseg.model_store import new_model

        return new_model(cls, input_channels, objects, cfg, plane_names, in_channels)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", engine: Optional[str] = None) -> "Model":
        """Load a model folder (written by :meth:`save` or ``stainseg train``); one-line error if it is unusable.

        ``engine`` (``"auto"``, ``"torch"``, ``"onnx"``; None: the folder's ``[segment] engine``)
        chooses what runs the network (:mod:`stainseg.segment.engine`): on a machine without a
        CUDA GPU, ``"auto"`` runs the folder's ``model.onnx`` with ONNX Runtime and torch is not
        imported unless :attr:`network` is used.

        Examples
        --------
        >>> import tempfile
        >>> folder = Model.new(["DNA"]).save(tempfile.mkdtemp() + "/m")
        >>> Model.load(folder).input_channels
        ['DNA']
        """
        from stainseg.model_store import load_model

        return load_model(cls, path, device, engine)

    @classmethod
    def load_cached(cls, path: str | Path, device: str = "auto", engine: Optional[str] = None) -> "Model":
        """:meth:`load`, once per process per folder (reloaded when ``model.pt`` changes): for hosts and workers."""
        from stainseg.model_store import load_cached

        return load_cached(cls, path, device, engine)

    def save(self, path: str | Path, onnx: bool = True) -> Path:
        """Write the model folder (every file atomically); returns the folder.

        With ``onnx`` (default) the folder also gets ``model.onnx``, exported from the network and
        checked against torch to 1e-4, so that segmentation on a CPU needs no torch.
        """
        from stainseg.model_store import save_model

        return save_model(self, path, onnx)

    # ------------------------------------------------------------------ network
    @property
    def network(self) -> Any:
        """The torch network (:class:`stainseg.network.StainNet`); read from ``model.pt`` on first use when loaded lazily."""
        from stainseg.modeldir import LazyNetwork

        if isinstance(self._network, LazyNetwork):
            self._network = self._network.load()
        return self._network

    @network.setter
    def network(self, value: Any) -> None:
        self._network = value
        self.onnx_file = None  # an exported graph holds the old weights
        self.engine_choice = None

    # ------------------------------------------------------------------ facts
    @property
    def in_channels(self) -> int:
        """Number of network input planes."""
        return int(self._network.in_channels)

    @property
    def n_classes(self) -> int:
        return int(self._network.n_classes)

    @property
    def network_config(self) -> ModelConfig:
        return self._network.cfg

    @property
    def network_objects(self) -> str:
        """What the network segments: ``"nuclei"`` for cells grown from nuclei (:attr:`cell_extent`), else :attr:`objects`.

        Examples
        --------
        >>> Model.new(["phase"], objects="cells").network_objects
        'cells'
        """
        return "nuclei" if self.cell_extent is not None else self.objects

    @property
    def dilation(self) -> int:
        """The post-segmentation dilation of the network's objects: set or calibrated, else the paper's 9 (cells) or 3 (nuclei)."""
        if self.segment_settings.dilation is not None:
            return int(self.segment_settings.dilation)
        return 9 if self.network_objects == "cells" else 3

    def instance_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of :func:`stainseg.segment.instances.probability_to_labels` (dilation included)."""
        s = self.segment_settings
        options = {"threshold": s.threshold, "min_size": s.min_size, "min_distance": s.min_distance,
                   "min_depth": s.min_depth, "smoothing": s.smoothing, "dilation": self.dilation}
        options.update({k: v for k, v in overrides.items() if k in options and v is not None})
        return options

    def describe(self) -> str:
        """One line: objects (and how cells are made), inputs, tiling.

        Examples
        --------
        >>> Model.new(["DNA"]).describe()
        'nuclei from 1 input(s): DNA; overlapping tiles of up to 1152 px'
        >>> from stainseg.groundtruth.extent import CellExtent
        >>> model = Model.new(["phase"], objects="cells")
        >>> model.cell_extent = CellExtent()
        >>> model.describe()
        'cells via nuclei (nuclei network, cells grown over the label-free texture) from 1 input(s): phase; overlapping tiles of up to 1152 px'
        """
        s = self.segment_settings
        if s.tiling == "overlap":
            tiling = f"overlapping tiles of up to {s.overlap_tile} px"
        else:
            tiling = f"tiles of {s.tile_size} px{', two passes' if s.two_pass else ''}"
        what = self.objects
        if self.cell_extent is not None:
            what = "cells via nuclei (nuclei network, cells grown over the label-free texture)"
        return f"{what} from {self.in_channels} input(s): {', '.join(self.plane_names)}; {tiling}"

    # ------------------------------------------------------------------ preprocessing
    def arrange(self, raw: Any, where: str | Path | None = None) -> np.ndarray:
        """Raw planes (see :func:`arrange_channels`) as the model's (C, Y, X) stack; checks channels, dtype and NaN."""
        stack = arrange_channels(raw, self.in_channels, where)
        if not np.isfinite(stack).all():
            raise StainsegError("image contains NaN or infinite pixels; fix or mask the input file", where)
        return stack

    def prepare(self, raw: Any, where: str | Path | None = None) -> np.ndarray:
        """The network input of raw planes: illumination correction, normalisation, the working scale (the only implementation).

        Returns float32 (C, Y, X), reduced by ``preprocessing.downsample`` when that is above 1 (:mod:`stainseg.scale`).
        """
        return prepare(self.arrange(raw, where), self.preprocessing)

    def fit_statistics(self, raws: Sequence[np.ndarray], labels: Optional[Sequence[np.ndarray]] = None) -> None:
        """Record the statistics of the training images: intensities after illumination correction (for normalisation),
        the flat field, and the quality reference (intensity, sharpness, texture and, with ``labels``, object counts and
        sizes): :func:`stainseg.model_calibration.fit_training_statistics`."""
        from stainseg.model_calibration import fit_training_statistics

        fit_training_statistics(self, raws, labels)

    # ------------------------------------------------------------------ inference (stainseg.model_engine, stainseg.model_run)
    def engine(self) -> Any:
        """The engine that runs the network now and why (:class:`stainseg.segment.engine.EngineChoice`;
        :func:`stainseg.model_engine.model_engine`).

        Examples
        --------
        >>> Model.new(["DNA"]).engine().engine   # in memory, no model.onnx yet
        'torch'
        """
        from stainseg.model_engine import model_engine

        return model_engine(self)

    def engine_facts(self) -> dict[str, Any]:
        """What run.json records of the engine: setting, engine used, why, and the runtime in one line."""
        choice = self.engine()
        predictor = self.predictor()
        return {"setting": self.segment_settings.engine, "engine": choice.engine, "reason": choice.reason,
                "runtime": predictor.describe() if hasattr(predictor, "describe") else choice.engine}

    def predictor(self, progress: Optional[Callable[[int], None]] = None) -> Callable[[np.ndarray], np.ndarray]:
        """The tile predictor ``(N, C, t, t) -> (N, K, t, t)`` of the model's engine (built once).

        ONNX Runtime (``model.onnx``, float32, CPU) or torch on the model's device
        (:meth:`engine`; :func:`stainseg.model_engine.model_predictor`)."""
        from stainseg.model_engine import model_predictor

        return model_predictor(self, progress)

    def predict_prepared(self, x: np.ndarray, uncertainty: bool = False, progress: Optional[Callable[[int], None]] = None,
                         **overrides: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Inference on an already prepared (C, Y, X) input: ``(probability (K, Y, X), uncertainty or None)``.

        ``tiling = "overlap"``: large tiles with a narrow blended overlap (no uncertainty map);
        ``"tiles"``: the paper's tiles, with the two-pass disagreement as uncertainty."""
        from stainseg.segment.tiling import predict_overlap, predict_tiled

        s = self._settings(overrides)
        if s.tiling == "overlap":
            return predict_overlap(x, self.predictor(progress), tile_size=s.overlap_tile, overlap=s.overlap), None
        return predict_tiled(x, self.predictor(progress), tile_size=s.tile_size, two_pass=s.two_pass,
                             batch_size=s.batch_size, uncertainty=uncertainty and s.two_pass)

    def predict_probability(self, raw: Any, **overrides: Any) -> np.ndarray:
        """Class probabilities (K, Y, X) of raw planes (background first).

        Examples
        --------
        >>> Model.new(["DNA"]).predict_probability(np.ones((32, 40))).shape
        (2, 32, 40)
        """
        return probability_of(self, raw, **overrides)

    def _settings(self, overrides: Mapping[str, Any]) -> SegmentConfig:
        """The segmentation settings of one call: the model's with ``overrides`` (:func:`stainseg.model_run.run_settings`)."""
        return run_settings(self.segment_settings, overrides)

    def check(self, stack: np.ndarray) -> list[Any]:
        """Quality flags of a raw (C, Y, X) stack against the training images (:mod:`stainseg.quality`).

        Without a quality reference (a model of stainseg 0.1) only a blank stack is flagged.
        """
        from stainseg.quality import FLAG_MEANINGS, Flag, check_image, is_blank

        if self.reference:
            return list(check_image(stack, self.reference))
        if is_constant(stack) or is_blank(stack):
            return [Flag("blank", f"blank: {FLAG_MEANINGS['blank']}")]
        return []

    def empty_result(self, stack: np.ndarray, flags: list[Any], two_pass: Optional[bool] = None) -> dict[str, Any]:
        """What :meth:`run` returns for an image that is not run through the network: no cells, background everywhere
        (:func:`stainseg.model_run.empty_result`)."""
        from stainseg.model_run import empty_result

        return empty_result(self, stack, flags, two_pass)

    def run(self, raw: Any, where: str | Path | None = None, progress: Optional[Callable[[int], None]] = None,
            check: bool = True, flags: Optional[list[Any]] = None, **overrides: Any) -> dict[str, Any]:
        """Segment raw planes and return everything: ``labels``, ``probability``, ``uncertainty``, ``timings``, ``flags``.

        A model of cells grown from nuclei (:attr:`cell_extent`) also returns the network's ``nuclei``.
        ``flags`` are :class:`stainseg.quality.Flag` s for an image or a result unlike the training data;
        pass the image's flags when :meth:`check` already made them. A blank image gives zero cells and
        the ``blank`` flag without running the network. Parameters and result:
        :func:`stainseg.model_run.run_model`.

        Examples
        --------
        >>> result = Model.new(["DNA"]).run(np.random.default_rng(0).gamma(2.0, 50.0, (64, 64)))
        >>> sorted(result["timings"])
        ['check_s', 'inference_s', 'postprocess_s', 'preprocess_s']
        """
        from stainseg.model_run import run_model

        return run_model(self, raw, where, progress, check, flags, **overrides)

    def segment(self, raw: Any, **overrides: Any) -> np.ndarray:
        """Instance labels (Y, X) of raw planes: what ``stainseg segment MODEL image.tif`` writes.

        Parameters
        ----------
        raw : ndarray or sequence of ndarray
            The model's input channels, any intensity scale: (Y, X), (C, Y, X), (Y, X, C) or a list of planes.
        **overrides
            Any of ``tile_size``, ``two_pass``, ``batch_size``, ``threshold``, ``min_size``,
            ``min_distance``, ``min_depth``, ``dilation`` (None keeps the model's value).
        """
        return self.run(raw, **overrides)["labels"]

    def segment_blockwise(self, image: Any, out: str | Path, **options: Any) -> Any:
        """Segment one huge image (TIFF, zarr or array) band by band into ``out/labels/<name>.ome.zarr``, with this
        model's preprocessing and settings: :func:`stainseg.segment.blockwise.segment_blockwise` (its options too)."""
        from stainseg.segment.blockwise import segment_blockwise

        return segment_blockwise(self, image, out, **options)

    # ------------------------------------------------------------------ calibration (stainseg.model_calibration)
    def calibrate(self, images: Sequence[Any], labels: Sequence[np.ndarray], prepared: bool = False,
                  dilation: bool = True, statistics: Optional[dict[str, Any]] = None,
                  foreground_factor: Optional[float] = None, smoothing: bool = True) -> dict[str, Any]:
        """Derive the instance settings from ``labels`` and calibrate them on ``images`` (in memory; nothing is written).

        Threshold, sizes, seed spacing, dilation and smoothing are set in :attr:`segment_settings`,
        the label statistics in :attr:`derived`; returns the calibration record (also kept in
        ``info["calibration"]``). Parameters: :func:`stainseg.model_calibration.calibrate_model`.
        """
        from stainseg.model_calibration import calibrate_model

        return calibrate_model(self, images, labels, prepared=prepared, dilation=dilation, statistics=statistics,
                               foreground_factor=foreground_factor, smoothing=smoothing)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Model({self.describe()}{where})"
