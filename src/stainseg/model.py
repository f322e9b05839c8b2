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

import copy
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from stainseg.config import ExperimentConfig, ModelConfig, SegmentConfig
from stainseg.errors import StainsegError
from stainseg.preprocess import Preprocessing, channel_statistics, correct_plane, prepare

__all__ = ["Model", "arrange_channels"]

_CACHE: dict[tuple[str, float, str], "Model"] = {}
_CACHE_LOCK = threading.Lock()
SEGMENT_OVERRIDES = ("tiling", "tile_size", "two_pass", "batch_size", "threshold", "min_size", "min_distance", "min_depth", "dilation", "smoothing")


def arrange_channels(image: Any, n_channels: int, where: str | Path | None = None) -> np.ndarray:
    """Arrange an array (or a list of 2-D planes) as the (C, Y, X) float stack of a model with ``n_channels`` inputs.

    Accepts (Y, X) for one channel, (C, Y, X), (Y, X, C) with C <= 4, singleton axes, or a
    sequence of 2-D planes of one size in the order of the model's input channels. Anything else
    is a one-line :class:`StainsegError` naming ``where``.

    Examples
    --------
    >>> arrange_channels(np.zeros((5, 6, 2)), 2).shape
    (2, 5, 6)
    """
    from stainseg.io.images import as_float

    if isinstance(image, (list, tuple)):
        planes = [np.squeeze(np.asarray(p)) for p in image]
        if not planes:
            raise StainsegError("no image given; give the model's input plane(s)", where)
        if len(planes) > 1:
            if len({p.shape for p in planes}) > 1 or any(p.ndim != 2 for p in planes):
                raise StainsegError(f"the input planes must be 2-D and of one size, got shapes {[p.shape for p in planes]}", where)
            image = np.stack(planes)
        else:
            image = planes[0]
    image = np.asarray(image)
    shape = image.shape
    image = np.squeeze(image)
    if image.ndim < 2:
        raise StainsegError(f"image is only {' x '.join(map(str, shape)) or 'a scalar'} pixels; too small to segment", where)
    if image.ndim == 3 and image.shape[-1] in (3, 4) and n_channels not in (image.shape[0], image.shape[-1]):
        raise StainsegError(f"is a colour (RGB) image but the model expects {n_channels} grayscale channel(s); "
                            "give the grayscale microscope image (see MODEL/model.json)", where)
    if image.ndim == 2:
        image = image[None]
    if image.ndim == 3 and image.shape[0] != n_channels and image.shape[-1] == n_channels and n_channels <= 4:
        image = np.moveaxis(image, -1, 0)
    if image.ndim != 3 or image.shape[0] != n_channels:
        got = image.shape[0] if image.ndim == 3 else f"shape {image.shape}"
        raise StainsegError(f"image has {got} channel(s)/plane(s) but the model expects {n_channels}; give a stack with "
                            "the model's input channels in order (see MODEL/model.json)", where)
    if min(image.shape[1:]) < 2:
        raise StainsegError(f"image is only {image.shape[1]} x {image.shape[2]} pixels; too small to segment", where)
    return as_float(image, where)


def is_constant(stack: np.ndarray) -> bool:
    """True when every plane of a (C, Y, X) stack is constant (an empty or flat image)."""
    return all(float(np.min(plane)) == float(np.max(plane)) for plane in stack)


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

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(cls, input_channels: Sequence[str], objects: str = "nuclei", cfg: Optional[ExperimentConfig] = None,
            plane_names: Optional[Sequence[str]] = None, in_channels: Optional[int] = None) -> "Model":
        """An untrained model (random weights) with the settings of ``cfg`` (defaults when None).

        The network has one input per name in ``plane_names``, else ``in_channels`` inputs, else
        one per input channel.

        Examples
        --------
        >>> Model.new(["BF1", "BF2"]).in_channels
        2
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
        from stainseg.modeldir import read_model_dir

        stored = read_model_dir(path, engine=engine, device=None if device == "auto" else device)
        model = cls(stored.network, stored.input_channels, objects=stored.objects, preprocessing=stored.preprocessing,
                    segment=stored.segment_settings, derived=stored.derived, info=stored.info,
                    experiment=stored.experiment, history=stored.history, path=stored.path,
                    plane_names=stored.plane_names, reference=stored.reference, cell_extent=stored.cell_extent)
        model.onnx_file = stored.onnx_file
        return model

    @classmethod
    def load_cached(cls, path: str | Path, device: str = "auto", engine: Optional[str] = None) -> "Model":
        """:meth:`load`, once per process per folder (reloaded when ``model.pt`` changes): for hosts and workers."""
        path = Path(path).expanduser()
        weights = path / "model.pt"
        key = (str(path.resolve()), weights.stat().st_mtime if weights.is_file() else 0.0, device, str(engine))
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = cls.load(path, device, engine)
            return _CACHE[key]

    def save(self, path: str | Path, onnx: bool = True) -> Path:
        """Write the model folder (every file atomically); returns the folder.

        With ``onnx`` (default) the folder also gets ``model.onnx``, exported from the network and
        checked against torch to 1e-4, so that segmentation on a CPU needs no torch.
        """
        from stainseg.modeldir import ONNX_FILE, StoredModel, write_model_dir

        stored = StoredModel(self.network, self.input_channels, self.objects, self.preprocessing, self.segment_settings,
                             derived=self.derived, info=self.info, history=self.history, plane_names=self.plane_names,
                             reference=self.reference, experiment=self.experiment,
                             cell_extent=None if self.cell_extent is None else self.cell_extent.to_dict())
        self.path = write_model_dir(stored, path, onnx=onnx)
        onnx_file = self.path / ONNX_FILE
        self.onnx_file = onnx_file if onnx_file.is_file() else None
        self.engine_choice = None
        return self.path

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
        """The network input of raw planes: illumination correction, then normalisation (the only implementation).

        Returns float32 (C, Y, X).
        """
        return prepare(self.arrange(raw, where), self.preprocessing)

    def fit_statistics(self, raws: Sequence[np.ndarray], labels: Optional[Sequence[np.ndarray]] = None) -> None:
        """Record the statistics of the training images: intensities after illumination correction (for normalisation)
        and the quality reference (intensity, sharpness, texture and, with ``labels``, object counts and sizes)."""
        from stainseg.quality import reference_statistics

        stacks = [self.arrange(raw) for raw in raws]
        self.reference = reference_statistics(stacks, None if labels is None else [np.asarray(lab) for lab in labels])
        corrected = []
        for raw in raws:
            stack = self.arrange(raw)
            corrected.append(np.stack([correct_plane(plane, self.preprocessing) for plane in stack]))
        self.preprocessing.statistics = channel_statistics(corrected, self.preprocessing.low, self.preprocessing.high)
        self.preprocessing.flat_field = self._flat_field(stacks)

    def _flat_field(self, stacks: Sequence[np.ndarray]) -> Optional[np.ndarray]:
        """Per-plane flat fields of the training stacks (:func:`stainseg.groundtruth.illumination.flat_field`), or None
        when they differ in size or the model does not correct illumination."""
        if self.preprocessing.illumination != "spline" or not stacks or len({s.shape for s in stacks}) != 1:
            return None
        from stainseg.groundtruth.illumination import flat_field

        p = self.preprocessing
        return np.stack([flat_field([s[c] for s in stacks], p.spline_grid, p.spline_iterations) for c in range(stacks[0].shape[0])])

    # ------------------------------------------------------------------ inference
    def engine(self) -> Any:
        """The engine that runs the network now and why (:class:`stainseg.segment.engine.EngineChoice`).

        Examples
        --------
        >>> Model.new(["DNA"]).engine().engine   # in memory, no model.onnx yet
        'torch'
        """
        from stainseg.segment.engine import choose_engine

        s = self.segment_settings
        if self.engine_choice is None or getattr(self, "_engine_key", None) != (s.engine, s.device, self.onnx_file):
            self.engine_choice = choose_engine(s.engine, s.device, self.onnx_file)
            self._engine_key = (s.engine, s.device, self.onnx_file)
        return self.engine_choice

    def engine_facts(self) -> dict[str, Any]:
        """What run.json records of the engine: setting, engine used, why, and the runtime in one line."""
        choice = self.engine()
        predictor = self.predictor()
        return {"setting": self.segment_settings.engine, "engine": choice.engine, "reason": choice.reason,
                "runtime": predictor.describe() if hasattr(predictor, "describe") else choice.engine}

    def predictor(self, progress: Optional[Callable[[int], None]] = None) -> Callable[[np.ndarray], np.ndarray]:
        """The tile predictor ``(N, C, t, t) -> (N, K, t, t)`` of the model's engine (built once).

        ONNX Runtime (``model.onnx``, float32, CPU) or torch on the model's device
        (:meth:`engine`)."""
        engine = self.engine().engine
        key = (engine, id(self._network), self.segment_settings.device, self.segment_settings.bfloat16, self.onnx_file)
        if self._predictor is None or self._predictor_key != key:
            if engine == "onnx":
                from stainseg.segment.onnx_engine import OnnxPredictor

                self._predictor = OnnxPredictor(self.onnx_file)  # type: ignore[arg-type]
            else:
                from stainseg.segment.predictor import TorchPredictor

                self._predictor = TorchPredictor(self.network, device=self.segment_settings.device, bfloat16=self.segment_settings.bfloat16)
            self._predictor_key = key
        if progress is None:
            return self._predictor
        inner, done = self._predictor, [0]

        def counting(batch: np.ndarray) -> np.ndarray:
            out = inner(batch)
            done[0] += int(batch.shape[0])
            progress(done[0])
            return out
        return counting

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
        return self.predict_prepared(self.prepare(raw), **overrides)[0]

    def _settings(self, overrides: Mapping[str, Any]) -> SegmentConfig:
        unknown = sorted(set(overrides) - set(SEGMENT_OVERRIDES))
        if unknown:
            raise StainsegError(f"unknown segmentation setting {unknown[0]!r}; use one of {', '.join(SEGMENT_OVERRIDES)}")
        s = copy.deepcopy(self.segment_settings)
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        if s.tiling not in ("overlap", "tiles"):
            raise StainsegError(f"tiling {s.tiling!r} must be \"overlap\" or \"tiles\"")
        if s.tile_size < 16:
            raise StainsegError(f"tile size {s.tile_size} is too small; use at least 16 (the model's is {self.segment_settings.tile_size})")
        if not 0.0 < float(s.threshold) < 1.0:
            raise StainsegError(f"threshold {s.threshold} must lie between 0 and 1")
        return s

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
        """What :meth:`run` returns for an image that is not run through the network: no cells, background everywhere."""
        shape = tuple(stack.shape[1:])
        prob = np.zeros((self.n_classes,) + shape, np.float32)
        prob[0] = 1.0
        two_pass = self.segment_settings.two_pass if two_pass is None else two_pass
        result = {"labels": np.zeros(shape, np.uint16), "probability": prob, "stack": stack, "flags": flags,
                  "uncertainty": np.zeros(shape, np.float32) if two_pass else None,
                  "timings": {"check_s": 0.0, "preprocess_s": 0.0, "inference_s": 0.0, "postprocess_s": 0.0}}
        if self.cell_extent is not None:
            result["nuclei"] = np.zeros(shape, np.uint16)
        return result

    def run(self, raw: Any, where: str | Path | None = None, progress: Optional[Callable[[int], None]] = None,
            check: bool = True, flags: Optional[list[Any]] = None, **overrides: Any) -> dict[str, Any]:
        """Segment raw planes and return everything: ``labels``, ``probability``, ``uncertainty``, ``timings``, ``flags``.

        A model of cells grown from nuclei (:attr:`cell_extent`) segments the nuclei with the network
        (returned as ``nuclei``; ``probability`` is theirs), then grows each into its cell over the
        label-free planes by the recipe of the automatic cell labels (``labels``: cell ``k`` holds
        nucleus ``k``); the object checks compare those cells with the training cells.

        ``flags`` are :class:`stainseg.quality.Flag` s (a code and a reason in words) for an image or
        a result unlike the training data; pass the image's flags when :meth:`check` already made
        them. A blank image (constant, or camera noise only) has no cells by definition: it gives
        zero cells and the ``blank`` flag without running the network.
        """
        from stainseg.quality import FLAG_MEANINGS, Flag, is_blank
        from stainseg.segment.instances import probability_to_labels

        settings = self._settings(overrides)
        stack = self.arrange(raw, where)
        t0 = time.perf_counter()
        constant = is_constant(stack)
        if flags is None and check:
            # the checks (numpy, mostly single-threaded) run on a thread beside the pre-processing, so the
            # second core does them while the first prepares the image; a blank image wastes that preparation
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(self.check, stack)
                x = None if constant else prepare(stack, self.preprocessing)
                t1 = time.perf_counter()
                flags = pending.result()
            t_check = time.perf_counter() - t1
        else:
            flags, t_check = list(flags or []), 0.0
            x, t1 = None, t0
        flagged_blank = any(f.code == "blank" for f in flags)
        if constant or (flagged_blank and is_blank(stack)):
            if not flagged_blank:
                flags.insert(0, Flag("blank", f"blank: {FLAG_MEANINGS['blank']}"))
            result = self.empty_result(stack, flags, settings.two_pass and settings.tiling == "tiles")
            result["timings"]["check_s"] = t_check
            return result
        if x is None:
            x = prepare(stack, self.preprocessing)
            t1 = time.perf_counter()
        prob, unc = self.predict_prepared(x, uncertainty=True, progress=progress, **overrides)
        del x
        t2 = time.perf_counter()
        labels = probability_to_labels(prob, **self.instance_options(**overrides))
        nuclei = None
        if self.cell_extent is not None:
            nuclei = labels
            labels = self.cell_extent.cells(stack, nuclei).astype(nuclei.dtype, copy=False)
        if check and self.reference and self.reference.get("objects"):
            from stainseg.quality import check_objects

            flags += check_objects(labels, self.reference)
        t3 = time.perf_counter()
        result = {"labels": labels, "probability": prob, "uncertainty": unc, "stack": stack, "flags": flags,
                  "timings": {"check_s": t_check, "preprocess_s": t1 - t0, "inference_s": t2 - t1, "postprocess_s": t3 - t2}}
        if nuclei is not None:
            result["nuclei"] = nuclei
        return result

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

    # ------------------------------------------------------------------ calibration
    def calibrate(self, images: Sequence[Any], labels: Sequence[np.ndarray], prepared: bool = False,
                  dilation: bool = True, statistics: Optional[dict[str, Any]] = None,
                  foreground_factor: Optional[float] = None, smoothing: bool = True) -> dict[str, Any]:
        """Derive the instance settings from ``labels`` and calibrate them on ``images`` (in memory; nothing is written).

        The typical object size, smallest object and seed spacing come from the labels
        (:mod:`stainseg.segment.derive`; from ``statistics`` of all training labels when given),
        the starting threshold from the loss's foreground weight (``f / (1 + f)``); threshold,
        dilation, the smallest-size factor and the smoothing are then chosen by the pooled score
        of segmenting ``images`` against ``labels``. With fewer than
        :data:`stainseg.segment.derive.MIN_CALIBRATION_OBJECTS` objects the derived threshold is kept.

        Parameters
        ----------
        images : sequence
            Raw planes (or prepared network inputs when ``prepared``), e.g. the validation crops.
        labels : sequence of ndarray
            Their automatic instance labels of the network's objects (:attr:`network_objects`: the nuclei
            for a model of cells grown from nuclei).
        dilation : bool
            Calibrate the dilation too (False keeps a dilation set in the config).
        statistics : dict, optional
            :func:`stainseg.segment.derive.object_statistics` of all the training labels (default: of ``labels``).
        foreground_factor : float, optional
            The loss's extra foreground weight the network was trained with (default: ``info["foreground_factor"]``).
        smoothing : bool
            Also search a Gaussian smoothing of the map (fractions of the typical radius).

        Returns
        -------
        dict
            The calibration record (also kept in ``info["calibration"]``).
        """
        from stainseg.segment.derive import SMOOTHING_FACTORS, calibrate, derived_settings, object_statistics

        labels = [np.asarray(lab) for lab in labels]
        stats = statistics or object_statistics(labels)
        if not stats.get("objects") or not any(lab.any() for lab in labels):
            raise StainsegError("the calibration labels hold no objects; give images with objects in them")
        if foreground_factor is None and isinstance(self.info.get("foreground_factor"), (int, float)):
            foreground_factor = float(self.info["foreground_factor"])
        base = derived_settings(stats, foreground_factor)
        probs = [self.predict_prepared(np.asarray(im, np.float32) if prepared else self.prepare(im))[0] for im in images]
        grid: dict[str, Any] = {} if dilation else {"dilation": (self.dilation,)}
        if smoothing and self.n_classes == 2:
            grid["smoothing_factor"] = SMOOTHING_FACTORS
        record = calibrate(probs, labels, base, grid or None)
        chosen = record["settings"]
        s = self.segment_settings
        s.threshold, s.min_size = float(chosen["threshold"]), int(chosen["min_size"])
        s.min_distance, s.min_depth = chosen.get("min_distance"), chosen.get("min_depth")
        s.dilation = int(chosen["dilation"])
        s.smoothing = float(chosen["smoothing"]) if chosen.get("smoothing") else None
        self.derived = {"objects": stats, "derived": base}
        summary = {"images": len(labels), "objects": record["objects"], "threshold_fixed": record["threshold_fixed"],
                   "kept_derived": record["kept_derived"], "settings": chosen, "score": record["score"], "seconds": record["seconds"],
                   "paper_dilation": 9 if self.network_objects == "cells" else 3}
        self.info["calibration"] = summary
        return summary

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"Model({self.describe()}{where})"
