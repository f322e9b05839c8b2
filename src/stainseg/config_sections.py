"""The sections of a run's configuration, one dataclass each: ``[channels]``, ``[endpoint]``, ``[split]``,
``[groundtruth]``, ``[model]``, ``[train]``, ``[segment]``, ``[preprocess]`` and ``[evaluation]``.

:class:`stainseg.config.ExperimentConfig` holds one of each, and :mod:`stainseg.config` loads,
checks and saves them (every name here can be imported from there too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

__all__ = ["ChannelsConfig", "EndpointConfig", "SplitConfig", "GroundTruthConfig", "ModelConfig", "TrainConfig",
           "SegmentConfig", "PreprocessConfig", "EvaluationConfig"]


@dataclass
class ChannelsConfig:
    """Which channel names (the ``channel`` field of the pattern) play which role.

    Examples
    --------
    >>> from stainseg.config import config_from_dict
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
    >>> from stainseg.config import config_from_dict
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
    downsample: Union[int, Literal["auto"]] = 1
    """Working scale: the network sees the images reduced by this integer factor (block means) and its objects are
    drawn back at full size (:mod:`stainseg.segment.upscale`); inference costs about ``1 / f**2``. ``"auto"``: the largest factor that keeps the
    median diameter of the training objects at 14 px or more (:mod:`stainseg.scale`); 1 (default): full resolution
    (the paper). ``"auto"`` is faster at the same accuracy on some real sets and lower on others (docs/results.md)."""


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


