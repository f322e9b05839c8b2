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

from stainseg.config_sections import (ChannelsConfig, EndpointConfig, EvaluationConfig, GroundTruthConfig,  # noqa: F401
                                      ModelConfig, PreprocessConfig, SegmentConfig, SplitConfig, TrainConfig)
from stainseg.errors import StainsegError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    if cfg.preprocess.downsample != "auto" and not 1 <= cfg.preprocess.downsample <= 8:
        raise bad("preprocess.downsample", "must be an integer from 1 (full resolution) to 8, or \"auto\"")
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
