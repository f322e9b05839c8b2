"""One configuration object for a run: experiment layout, ground truth, training, segmentation.

Loaded from and saved to TOML; every model directory and every output folder keeps a copy,
so that a result can be reproduced. Validation is strict: unknown keys, wrong types, missing
required keys and impossible values are one-line :class:`StainsegError` naming key and file.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from stainseg.errors import StainsegError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ChannelsConfig:
    """Which channel names (the ``channel`` field of the pattern) play which role.

    Examples
    --------
    >>> cfg = config_from_dict({"root": ".", "pattern": "(?P<channel>[a-z]+)[.]tif", "channels": {"input": ["bf"], "nuclei": "dna"}})
    >>> cfg.channels
    ChannelsConfig(input=['bf'], nuclei='dna', cytoplasm=None)
    """

    input: list[str] = field(default_factory=list)
    """Network input channels, in order; each z-plane of a channel becomes one network input."""
    nuclei: Optional[str] = None
    """Nuclear stain used for the automatic labels."""
    cytoplasm: Optional[str] = None
    """Cytoplasmic / cell-body stain for ``objects = "cells"``; without one, the cell extent comes from the
    texture of the label-free input channels, seeded by the nuclei (``stainseg.groundtruth.extent``), and
    ``cell_method = "auto"`` segments cells by a nuclei network plus that extent."""


@dataclass
class EndpointConfig:
    """Which image sets carry the stains (time-lapse: the last time point).

    Examples
    --------
    >>> EndpointConfig().time                          # the last time point carries the stains
    'last'
    """

    time: str = "last"
    """``"last"`` (per site), or a value of the ``time`` field."""


@dataclass
class SplitConfig:
    """Held-out image sets for testing; the rest train.

    Examples
    --------
    >>> cfg = config_from_dict({"root": ".", "pattern": "(?P<channel>[a-z]+)[.]tif", "channels": {"input": ["bf"], "nuclei": "dna"},
    ...                       "split": {"test_sites": ["2"]}})
    >>> cfg.split.test_sites, cfg.split.test_fraction
    (['2'], 0.0)
    """

    test_sites: list[str] = field(default_factory=list)
    """Values of the ``site`` field held out (compared as numbers when both are numeric)."""
    test_wells: list[str] = field(default_factory=list)
    """Values of the ``well`` field held out entirely (unseen wells)."""
    test_fraction: float = 0.0
    """When no sites/wells are named: fraction of end-point image sets held out at random (seeded)."""
    seed: int = 0


@dataclass
class GroundTruthConfig:
    """Automatic labels from the stains (METHOD.md section 1).

    Examples
    --------
    >>> GroundTruthConfig().illumination
    'spline'
    """

    illumination: Literal["spline", "plate", "none"] = "spline"
    """Per-image iterative spline background fit, one median function per channel over the plate, or none."""
    spline_grid: int = 5
    """Spline control points per image side for the background fit."""
    spline_iterations: int = 5
    nucleus_diameter: Optional[float] = None
    """Typical nucleus diameter in px; estimated from the image when not given."""
    min_area: Optional[int] = None
    """Smallest nucleus area in px; default derived from the diameter."""
    exclude_border: bool = False
    """Drop objects touching the image border."""
    cytoplasm_dilation: int = 5
    """Diameter of the disk for grayscale dilation of the cytoplasm image (paper: 5)."""
    qc_mad: float = 3.0
    """Image sets beyond median +- this many MADs of the plate are excluded from training."""


@dataclass
class ModelConfig:
    """Network architecture (METHOD.md section 3).

    Examples
    --------
    >>> ModelConfig(head="3class").head, ModelConfig().base_width
    ('3class', 8)
    """

    in_channels: int = 1
    base_width: int = 8
    """Feature maps of the first layer; doubles at every down-sampling."""
    depth: int = 3
    """Number of ConvPool down-samplings (and DeConv up-samplings)."""
    residual_blocks: int = 4
    """Residual blocks at the bottleneck."""
    head: Literal["2class", "3class"] = "2class"
    """2class = background/foreground (paper); 3class adds a boundary class. Measured on BBBC039 with the
    fast preset, 2class won by ~10 points of F >= 0.6 (docs/network.md), so it is the default."""


@dataclass
class TrainConfig:
    """Training (METHOD.md sections 2 and 4).

    Examples
    --------
    >>> TrainConfig().preset, TrainConfig(iterations=200).iterations
    ('fast', 200)
    """

    preset: Literal["fast", "paper"] = "fast"
    iterations: Optional[int] = None
    crop_size: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    foreground_factor: Union[float, Literal["auto"]] = "auto"
    """Extra weight of foreground pixels; ``"auto"`` derives it from the foreground fraction (paper: 3)."""
    validation_fraction: float = 0.15
    checkpoint_every: int = 100
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bfloat16: bool = True
    """bfloat16 autocast on CPUs that support it (mixed precision on CUDA)."""
    separate_touching: bool = True
    """2class targets: pixels where two objects touch are background (U-Net style separation lines).
    Measured on the synthetic time-lapse (dense touching cells): 94.5 % of cells with F >= 0.6 against
    45.0 % without (docs/network.md)."""
    per_well: bool = False
    """One model per well (the paper's recommendation against inter-well variation)."""
    max_minutes: Optional[float] = None
    """Stop training after this many minutes (the schedule is compressed to fit)."""
    augment_rotate: bool = True
    """Besides the paper's flips, transpose crops at random: all eight rotations and reflections (false: the paper)."""
    augment_intensity: float = 0.3
    """Random contrast (gain ``exp(U(-s, s))``) and level (``U(-s, s)`` x inter-quartile spread) per input plane
    and crop; 0 = off (the paper). With both on, phase -> nuclei on deepcell scored 90.2 % / F1 0.865 against the
    manual 3T3 nuclei over three seeds (without: 78.6 % / 0.784, one seed at 59.5 %) and BBBC039 91.8 % / 0.930 (without:
    91.2 % / 0.929); docs/results.md."""
    start_from: Optional[str] = None
    """A model folder whose network weights training starts from (fine-tuning; relative to the TOML file).
    Its architecture is used; the number of input planes may differ (:mod:`stainseg.train.start`)."""


@dataclass
class SegmentConfig:
    """Segmentation of new images (METHOD.md section 5).

    Examples
    --------
    >>> SegmentConfig().threshold
    0.5
    """

    tiling: Literal["overlap", "tiles"] = "overlap"
    """``"overlap"`` (default, fastest at the same seams figure): one pass of large tiles (at most ``overlap_tile`` px
    a side) overlapping by ``overlap`` px, blended linearly; an image no larger than a tile is one whole-image pass.
    ``"tiles"``: the paper's fixed ``tile_size`` tiles (with ``two_pass``), which also give the uncertainty map."""
    overlap_tile: int = 1152
    """Largest tile side of ``tiling = "overlap"`` (a 2048² image: 2 x 2 tiles of 1072²)."""
    overlap: int = 96
    """Overlap of neighbouring tiles with ``tiling = "overlap"``, in px (blended linearly across it)."""
    tile_size: int = 240
    two_pass: bool = True
    """Second pass shifted by half a tile (the paper's scheme; with ``tiling = "tiles"``)."""
    batch_size: int = 8
    threshold: float = 0.5
    min_size: Optional[int] = None
    """Objects with fewer pixels are dropped. Training derives it from its labels (half the 5th area percentile)."""
    min_distance: Optional[int] = None
    """Smallest spacing of watershed seeds in px. Training derives it from the typical object radius."""
    min_depth: Optional[float] = None
    """2-class watershed: touching basins stay apart only where the distance to the background dips by
    at least this many px between their centres (default 0.5; 0 keeps every distance maximum's basin)."""
    dilation: Optional[int] = None
    """Side of the square dilation. When not given, training calibrates it on the validation images
    (docs/network.md); without calibration 9 for cells and 3 for nuclei (the paper)."""
    smoothing: Optional[float] = None
    """Gaussian sigma (px) applied to the foreground probability before the threshold; None or 0 = none.
    Training chooses it on the validation crops among fractions of the typical object radius."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bfloat16: bool = True
    engine: Literal["auto", "torch", "onnx"] = "auto"
    """Inference engine: ``"auto"`` runs ONNX Runtime on the CPU when the model folder has ``model.onnx``
    (written at training) and torch on a CUDA GPU or for older folders; ``"torch"`` / ``"onnx"`` force one."""
    blockwise_pixels: int = 4096 * 4096
    """``stainseg segment`` segments an image with more pixels per plane (Y x X) than this, and every zarr input,
    block-wise (:mod:`stainseg.segment.blockwise`: bands of rows, labels to ``OUT/labels/<name>.ome.zarr``)."""

    def instance_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`stainseg.segment.instances.probability_to_labels` set here
        (``threshold``, ``min_size``, ``min_distance``, ``min_depth``); the dilation comes from :meth:`ExperimentConfig.dilation`.

        Examples
        --------
        >>> sorted(SegmentConfig(min_size=20).instance_options())
        ['min_depth', 'min_distance', 'min_size', 'threshold']
        """
        return {"threshold": self.threshold, "min_size": self.min_size, "min_distance": self.min_distance, "min_depth": self.min_depth}


@dataclass
class PreprocessConfig:
    """How input planes are prepared for the network (illumination as ``[groundtruth] illumination``).

    Examples
    --------
    >>> PreprocessConfig().normalization
    'hybrid'
    """

    normalization: Literal["image", "hybrid", "training"] = "hybrid"
    """``"image"``: each image's own percentiles (stainseg 0.1); ``"hybrid"``: the same, but a field with far less
    contrast than any training image (blank, noise only) stays dark; ``"training"``: percentiles of the training
    images. All three are relative to the image's median level, so a dimmer exposure is prepared the same
    (docs/how-it-works.md)."""


@dataclass
class EvaluationConfig:
    """Reference data to score against, besides the automatic labels (paths relative to the experiment file).

    Examples
    --------
    >>> EvaluationConfig(manual="masks").manual
    'masks'
    """

    manual: Optional[str] = None
    """Folder of manual masks (file stems matching image sets), for the 'mangt' comparison."""
    tracks: Optional[str] = None
    """CSV of true tracks (well, site, time, label, track_id, parent_track_id) for the labels in ``manual``."""


@dataclass
class ExperimentConfig:
    """Everything a run needs. ``root``, ``pattern`` and ``channels.input`` are required.

    Examples
    --------
    >>> cfg = ExperimentConfig(objects="cells", channels=ChannelsConfig(input=["BF"], nuclei="DNA", cytoplasm="CellTracker"))
    >>> cfg.train.preset, cfg.cell_route(), cfg.dilation()
    ('fast', 'network', 9)
    """

    name: str = ""
    root: str = ""
    pattern: str = ""
    objects: Literal["cells", "nuclei"] = "nuclei"
    cell_method: Literal["auto", "network", "nuclei"] = "auto"
    """How ``objects = "cells"`` are segmented. ``"network"``: the network learns the cell labels (the paper's path);
    ``"nuclei"``: the network learns the nuclei labels, and each found nucleus is grown into its cell over the
    texture of the label-free input, by the recipe that made the automatic cell labels
    (:func:`stainseg.groundtruth.extent.cells_from_nuclei`); needs no ``channels.cytoplasm``. ``"auto"``
    (default): ``"network"`` with a cytoplasm stain, ``"nuclei"`` without. Ignored for ``objects = "nuclei"``."""
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    groundtruth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    source: Optional[str] = None
    """The file this was loaded from (not saved)."""

    @property
    def root_path(self) -> Path:
        """``root`` resolved relative to the experiment file's folder (:meth:`resolve_path`).

        Examples
        --------
        >>> ExperimentConfig(root="images", source="/data/plate1/experiment.toml").root_path.as_posix()
        '/data/plate1/images'
        """
        return self.resolve_path(self.root)

    def resolve_path(self, value: str | Path) -> Path:
        """A path named in the experiment: a relative one is taken relative to the experiment file's folder.

        The one place where experiment paths (``root``, ``[evaluation] manual``, ``tracks`` ...) are resolved.

        Examples
        --------
        >>> cfg = ExperimentConfig(source="/data/plate1/experiment.toml")
        >>> cfg.resolve_path("masks").as_posix(), cfg.resolve_path("/abs/masks").as_posix()
        ('/data/plate1/masks', '/abs/masks')
        >>> ExperimentConfig().resolve_path("masks").as_posix()  # not loaded from a file: as given
        'masks'
        """
        path = Path(value)
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        return path

    def cell_route(self) -> Literal["network", "nuclei"]:
        """What the network learns: ``"network"`` (the objects themselves) or ``"nuclei"`` (cells grown from nuclei).

        ``cell_method = "auto"`` is ``"network"`` with ``channels.cytoplasm`` and ``"nuclei"`` without;
        ``objects = "nuclei"`` is always ``"network"``. ``"nuclei"`` with a cytoplasm stain is a one-line
        :class:`StainsegError` (the labels would come from the stain, the segmentation from the texture).

        Examples
        --------
        >>> ExperimentConfig(objects="cells").cell_route()            # no cytoplasm stain
        'nuclei'
        >>> ExperimentConfig(objects="cells", channels=ChannelsConfig(cytoplasm="CellTracker")).cell_route()
        'network'
        >>> ExperimentConfig(objects="cells", cell_method="network").cell_route(), ExperimentConfig().cell_route()
        ('network', 'network')
        """
        if self.objects != "cells":
            return "network"
        if self.cell_method == "nuclei" and self.channels.cytoplasm:
            raise StainsegError(f"key 'cell_method' {NUCLEI_WITH_CYTOPLASM}", self.source)
        if self.cell_method == "auto":
            return "network" if self.channels.cytoplasm else "nuclei"
        return self.cell_method  # type: ignore[return-value]

    def dilation(self) -> int:
        """The post-segmentation dilation of the network's objects: configured, else 9 for cells and 3 for nuclei
        (also 3 for cells grown from nuclei: the network segments nuclei, :meth:`cell_route`).

        Examples
        --------
        >>> ExperimentConfig(objects="nuclei").dilation(), ExperimentConfig(objects="cells", cell_method="network").dilation()
        (3, 9)
        >>> ExperimentConfig(objects="cells").dilation()  # no cytoplasm stain: a nuclei network
        3
        """
        if self.segment.dilation is not None:
            return self.segment.dilation
        return 9 if self.cell_route() == "network" and self.objects == "cells" else 3


#: Why ``cell_method = "nuclei"`` and ``channels.cytoplasm`` exclude each other (:meth:`ExperimentConfig.cell_route`).
NUCLEI_WITH_CYTOPLASM = ("= \"nuclei\" grows cells over the label-free texture and cannot use channels.cytoplasm; "
                         "use \"network\" (or \"auto\") with a cytoplasm stain, or remove channels.cytoplasm")


# --------------------------------------------------------------------------- validation

_REQUIRED = {"root", "pattern"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except StainsegError:
                continue
        raise StainsegError(f"key '{key}' must be {_type_name(tp)}, got {value!r}", where)
    if origin is Literal:
        if value in args:
            return value
        raise StainsegError(f"key '{key}' must be {_type_name(tp)}, got {value!r}", where)
    if origin is list:
        if not isinstance(value, list):
            raise StainsegError(f"key '{key}' must be {_type_name(tp)}, got {value!r}", where)
        return [_coerce(v, args[0], key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. time = 44 or site values given as numbers
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, where, prefix=key + ".")
    raise StainsegError(f"key '{key}' must be {_type_name(tp)}, got {value!r}", where)


def _build(cls: type, data: dict[str, Any], where: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise StainsegError(f"unknown key '{prefix}{key}'{hint}; see docs/configuration.md for the keys", where)
    kwargs = {k: _coerce(v, hints[k], prefix + k, where) for k, v in data.items()}
    return cls(**kwargs)


def _check_values(cfg: ExperimentConfig, where: str) -> None:
    def bad(key: str, why: str) -> StainsegError:
        return StainsegError(f"key '{key}' {why}", where)

    try:
        rx = re.compile(cfg.pattern)
    except re.error as exc:
        raise bad("pattern", f"is not a valid regular expression ({exc})") from None
    if cfg.pattern and "channel" not in rx.groupindex:
        raise bad("pattern", "needs a named group (?P<channel>...) that says which channel a file holds")
    if not cfg.channels.input:
        raise bad("channels.input", "must list at least one network input channel")
    if cfg.channels.nuclei is None:
        raise bad("channels.nuclei", "is required: the nuclear stain channel that makes the labels")
    if not 0.0 <= cfg.split.test_fraction < 1.0:
        raise bad("split.test_fraction", "must be in [0, 1)")
    if not 0.0 <= cfg.train.validation_fraction < 1.0:
        raise bad("train.validation_fraction", "must be in [0, 1)")
    if cfg.segment.tile_size < 16 or cfg.segment.tile_size % 8:
        raise bad("segment.tile_size", "must be a multiple of 8 and at least 16")
    if not 8 <= cfg.segment.overlap < cfg.segment.overlap_tile // 2:
        raise bad("segment.overlap", "must be at least 8 px and less than half of segment.overlap_tile")
    if not 0.0 < cfg.segment.threshold < 1.0:
        raise bad("segment.threshold", "must be between 0 and 1")
    if cfg.segment.min_depth is not None and not cfg.segment.min_depth >= 0:
        raise bad("segment.min_depth", "must be >= 0 (px; 0 = no merging of touching basins)")
    if cfg.segment.dilation is not None and (cfg.segment.dilation < 1 or cfg.segment.dilation % 2 == 0):
        raise bad("segment.dilation", "must be an odd number >= 1 (1 = no dilation)")
    if cfg.segment.blockwise_pixels < 1:
        raise bad("segment.blockwise_pixels", "must be >= 1 (pixels per plane above which an image is segmented block-wise)")
    for key in ("iterations", "crop_size", "batch_size"):
        value = getattr(cfg.train, key)
        if value is not None and value < 1:
            raise bad(f"train.{key}", "must be >= 1")
    if cfg.train.crop_size is not None and cfg.train.crop_size % 8:
        raise bad("train.crop_size", "must be a multiple of 8")
    if cfg.train.learning_rate is not None and cfg.train.learning_rate <= 0:
        raise bad("train.learning_rate", "must be > 0")
    if isinstance(cfg.train.foreground_factor, float) and cfg.train.foreground_factor <= 0:
        raise bad("train.foreground_factor", "must be > 0 or \"auto\"")
    if cfg.model.base_width < 1 or cfg.model.depth < 1 or cfg.model.residual_blocks < 0:
        raise bad("model", "base_width and depth must be >= 1, residual_blocks >= 0")
    if cfg.groundtruth.cytoplasm_dilation < 1:
        raise bad("groundtruth.cytoplasm_dilation", "must be >= 1")
    if cfg.groundtruth.nucleus_diameter is not None and cfg.groundtruth.nucleus_diameter <= 0:
        raise bad("groundtruth.nucleus_diameter", "must be > 0")
    if cfg.objects == "cells" and cfg.cell_method == "nuclei" and cfg.channels.cytoplasm:
        raise bad("cell_method", NUCLEI_WITH_CYTOPLASM)


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a TOML-like dict.

    Examples
    --------
    >>> channels = {"input": ["bf"], "nuclei": "dna"}
    >>> cfg = config_from_dict({"root": "images", "pattern": "(?P<channel>[a-z]+)[.]tif", "channels": channels, "train": {"iterations": 50}})
    >>> cfg.train.iterations
    50
    >>> config_from_dict({"root": "images", "pattern": "(?P<channel>[a-z]+)[.]tif", "channels": channels, "train": {"iteratons": 50}})
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: <config>: unknown key 'train.iteratons' (did you mean 'train.iterations'?); see docs/configuration.md for the keys
    """
    missing = sorted(k for k in _REQUIRED if k not in data)
    if missing:
        raise StainsegError(f"missing required key '{missing[0]}'; see docs/configuration.md", where)
    cfg = _build(ExperimentConfig, data, where)
    cfg.source = where if where != "<config>" else None
    _check_values(cfg, where)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "experiment.toml"
    >>> _ = path.write_text("root = 'images'\\npattern = '(?P<channel>[a-z]+)[.]tif'\\n[channels]\\ninput = ['bf']\\nnuclei = 'dna'\\n")
    >>> cfg = load_config(path)
    >>> cfg.channels.nuclei, cfg.root_path == path.parent / "images"
    ('dna', True)
    """
    path = Path(path)
    if not path.is_file():
        raise StainsegError("experiment file not found; check the path", path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StainsegError(f"TOML syntax error ({exc}); fix the file", path) from None
    except UnicodeDecodeError:
        raise StainsegError("is not a UTF-8 text file; give an experiment TOML", path) from None
    return config_from_dict(data, str(path.resolve()))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass, ``None`` values dropped (TOML has no null).

    Examples
    --------
    >>> data = config_to_dict(ExperimentConfig(root="images"))
    >>> data["root"], "source" in data, data["train"]["preset"]
    ('images', False, 'fast')
    """

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None and k != "source"}
        if isinstance(obj, list):
            return [clean(v) for v in obj]
        return obj

    return clean(dataclasses.asdict(cfg))


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the config as TOML (atomically), with ``root`` made absolute so it works from anywhere.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "copy.toml"
    >>> cfg = ExperimentConfig(root="/data/images", pattern="(?P<channel>[a-z]+)[.]tif",
    ...                        channels=ChannelsConfig(input=["bf"], nuclei="dna"))
    >>> save_config(cfg, path)
    >>> load_config(path).root
    '/data/images'
    """
    import tomli_w

    from stainseg.io.atomic import write_text

    data = config_to_dict(cfg)
    data["root"] = str(cfg.root_path.resolve()) if cfg.root else ""
    write_text(path, tomli_w.dumps(data))
