"""Write a stainseg model folder as a BioImage Model Zoo package (``stainseg export``).

The package (a zip with ``rdf.yaml`` per the current ``bioimageio.spec`` model format 0.5) holds:

- TorchScript weights and PyTorch state-dict weights (architecture :class:`BioimageioStainNet`,
  importable from this module), and ONNX weights (opset 17; the normalisation's quantiles by
  sorting, as ONNX has no quantile op) for ONNX Runtime users (deepImageJ, ilastik); the ONNX
  weights are left out, with a line on stderr, when onnxruntime is missing or they do not
  reproduce the test output;
- a test input (the sample image, centre crop, illumination-corrected) and the test output
  computed by stainseg itself (:meth:`stainseg.Model.prepare`, then the network on the whole crop);
- a cover image (input | automatic instances outlined), ``README.md`` documentation, an
  ``environment.yaml``, the model's ``model.json`` and the citations of the paper and of stainseg.

What the package computes, and where it stops (written into its documentation too):

- input: the model's input planes after illumination correction, the first half of
  :meth:`stainseg.Model.prepare` (stainseg's per-plane spline background, when the model's
  ``preprocessing.illumination`` is ``"spline"``); the package takes the image after that step,
  and its test input is exactly that;
- normalisation: the second half of :meth:`stainseg.Model.prepare`, inside the network wrapper
  (no rdf pre-processing op), with the model's ``preprocessing.normalization`` (``"image"``,
  ``"hybrid"`` or ``"training"``) and the training-image statistics it uses, so the package
  computes what ``stainseg segment`` computes; the rdf lists no pre-processing ops because
  ``"hybrid"`` and ``"training"`` have no bioimage.io op;
- output: per-pixel class probabilities (softmax) of the whole input in one pass. Instances
  (threshold, watershed, dilation) come from ``stainseg.segment.instances.probability_to_labels``
  in stainseg, as for StarDist.
- a model of cells grown from nuclei (``cell_method = "nuclei"``, :attr:`stainseg.Model.network_objects`
  ``"nuclei"``): the package is its nuclei network and is described as such (name, tags, output,
  README); the README names the :class:`stainseg.groundtruth.extent.CellExtent` step, with the
  model's stored parameters, that grows the nuclei into cells in stainseg and that bioimage.io
  consumers do not run. ``rdf.yaml`` ``config.stainseg`` records ``objects``, ``network_objects``
  and ``cell_extent``.

Needs ``bioimageio.spec`` (``pip install "stainseg[bioimageio]"``).
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

import stainseg
from stainseg.config import ModelConfig
from stainseg.errors import StainsegError
from stainseg.network import StainNet

__all__ = ["BioimageioStainNet", "export_bioimageio", "sample_from_experiment", "normalization_kwargs", "PAPER_DOI", "CLASS_NAMES"]

PAPER_DOI = "10.1038/s41598-017-07599-6"
PAPER_TEXT = ("Sadanandan, S. K., Ranefall, P., Le Guyader, S. & Wählby, C. Automated training of deep convolutional "
              "neural networks for cell segmentation. Sci. Rep. 7, 7860 (2017).")
PROJECT_TEXT = "stainseg {version}: segment label-free cell images with a network trained on automatic labels from end-point stains."
PROJECT_URL: Optional[str] = None
"""The project's public address, cited in every package when set (the lead sets it once public)."""
CLASS_NAMES = {2: ["background", "foreground"], 3: ["background", "interior", "boundary"]}
MAX_TEST_SIZE = 256
TOLERANCE = {"relative": 1e-3, "absolute": 2e-3}
"""How closely the weights must reproduce the test output (written into the rdf; checked at export)."""


def normalization_kwargs(preprocessing: Any, in_channels: int) -> dict[str, Any]:
    """:class:`BioimageioStainNet` keyword arguments for the normalisation of a model's :class:`~stainseg.preprocess.Preprocessing`.

    Per plane, the same choice as :func:`stainseg.preprocess.prepare`: ``floor`` is the hybrid
    lower bound of ``(hi - lo) / median level`` (0: none), ``fixed`` planes use
    ``relative_low`` / ``relative_high`` times the median level instead of their own percentiles.

    Examples
    --------
    >>> from stainseg.preprocess import Preprocessing
    >>> normalization_kwargs(Preprocessing(normalization="image"), 2)["floor"]
    [0.0, 0.0]
    """
    from stainseg.preprocess import FLOOR_FRACTION

    stats = preprocessing.statistics if len(preprocessing.statistics) == in_channels else []
    floor, fixed, rel_low, rel_high = [0.0] * in_channels, [False] * in_channels, [0.0] * in_channels, [1.0] * in_channels
    for c, st in enumerate(stats):
        if not st.images or preprocessing.normalization == "image":
            continue
        if preprocessing.normalization == "hybrid":
            floor[c] = float(FLOOR_FRACTION * st.min_relative_range)
        else:
            fixed[c], rel_low[c], rel_high[c] = True, float(st.relative_low), float(st.relative_high)
    return {"normalization": str(preprocessing.normalization), "low": float(preprocessing.low), "high": float(preprocessing.high),
            "floor": floor, "fixed": fixed, "relative_low": rel_low, "relative_high": rel_high}


class BioimageioStainNet(nn.Module):
    """StainNet for bioimage.io: illumination-corrected input → stainseg's normalisation → network → softmax.

    Parameters
    ----------
    in_channels, base_width, depth, residual_blocks : int
        :class:`stainseg.config.ModelConfig` fields.
    head : str
        ``"2class"`` or ``"3class"``.
    normalization, low, high, floor, fixed, relative_low, relative_high
        From :func:`normalization_kwargs` (the default is ``"image"``: each plane's own 0.5th and
        99.5th percentiles).

    Notes
    -----
    ``net`` is the stainseg network unchanged, so ``net.*`` in the state dict are the weights of
    ``MODEL/model.pt`` (the normalisation constants are not in the state dict: they are keyword
    arguments). Percentiles and medians are taken over every pixel; stainseg takes them from a
    regular ~512 x 512 subsample, which is every pixel up to 1023 px a side and agrees to ~1e-3 above.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 8, depth: int = 3, residual_blocks: int = 4,
                 head: str = "3class", normalization: str = "image", low: float = 0.5, high: float = 99.5,
                 floor: Optional[Sequence[float]] = None, fixed: Optional[Sequence[bool]] = None,
                 relative_low: Optional[Sequence[float]] = None, relative_high: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.net = StainNet(ModelConfig(in_channels=in_channels, base_width=base_width, depth=depth,
                                        residual_blocks=residual_blocks, head=head))
        self.normalization = normalization
        per_plane = {"floor": (floor, 0.0), "fixed": (fixed, False), "relative_low": (relative_low, 0.0),
                     "relative_high": (relative_high, 1.0)}
        for name, (values, default) in per_plane.items():
            values = list(values) if values is not None else [default] * in_channels
            if len(values) != in_channels:
                raise ValueError(f"{name} has {len(values)} values for {in_channels} input channels")
            dtype = torch.bool if name == "fixed" else torch.float32
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)
        self.register_buffer("quantiles", torch.tensor([low / 100.0, high / 100.0, 0.5], dtype=torch.float32), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """stainseg's normalisation of a (N, C, Y, X) illumination-corrected input (:func:`stainseg.preprocess.prepare`)."""
        q = torch.quantile(x.flatten(2), self.quantiles, dim=2)  # (3, N, C); linear interpolation, as numpy
        lo, hi, level = q[0], q[1], q[2].abs()
        lo = torch.where(self.fixed, self.relative_low * level, lo)
        hi = torch.where(self.fixed, self.relative_high * level, hi)
        hi = torch.maximum(hi, lo + self.floor * level)
        span = hi - lo
        valid = span > 0  # a constant plane becomes zeros
        y = ((x - lo[:, :, None, None]) / torch.where(valid, span, torch.ones_like(span))[:, :, None, None]).clamp(0.0, 1.0)
        y = y - torch.quantile(y.flatten(2), 0.5, dim=2)[:, :, None, None]
        return torch.where(valid[:, :, None, None], y, torch.zeros_like(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, K, Y, X) from a (N, C, Y, X) illumination-corrected input (any intensity scale)."""
        return torch.softmax(self.net(self.normalize(x.float())).float(), dim=1)


def _sorted_quantile(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(values, q, dim=2)`` (linear interpolation) by sorting: ONNX has no quantile op, but sort (TopK) and gather.

    The element count is taken from the tensor's shape at run time, so the exported graph holds for any image size.
    """
    from torch.onnx.operators import shape_as_tensor

    ordered = torch.sort(values, dim=2)[0]
    last = (shape_as_tensor(values)[2] - 1).to(values.dtype)
    pos = q.to(values.dtype) * last  # (Q,)
    lo = torch.floor(pos)
    frac = (pos - lo)[:, None, None]
    lo_i = lo.long()
    hi_i = torch.minimum(lo_i + 1, last.long())
    below = ordered.index_select(2, lo_i).permute(2, 0, 1)  # (Q, N, C)
    above = ordered.index_select(2, hi_i).permute(2, 0, 1)
    return below + (above - below) * frac


class _OnnxStainNet(BioimageioStainNet):
    """:class:`BioimageioStainNet` with its quantiles by sorting, for the ONNX weights (same outputs to ~1e-6)."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        q = _sorted_quantile(x.flatten(2), self.quantiles)
        lo, hi, level = q[0], q[1], q[2].abs()
        lo = torch.where(self.fixed, self.relative_low * level, lo)
        hi = torch.where(self.fixed, self.relative_high * level, hi)
        hi = torch.maximum(hi, lo + self.floor * level)
        span = hi - lo
        valid = span > 0
        y = ((x - lo[:, :, None, None]) / torch.where(valid, span, torch.ones_like(span))[:, :, None, None]).clamp(0.0, 1.0)
        y = y - _sorted_quantile(y.flatten(2), self.quantiles[2:])[0][:, :, None, None]
        return torch.where(valid[:, :, None, None], y, torch.zeros_like(y))


def _onnx_weights(wrapped: BioimageioStainNet, path: Path, in_channels: int, multiple: int, test_input: np.ndarray,
                  test_output: np.ndarray) -> Optional[str]:
    """Write the package's ONNX weights; returns None, or why they were left out (then the package has torch weights only)."""
    import warnings

    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    onnx_net = _OnnxStainNet(**wrapped.init_kwargs)
    onnx_net.net.load_state_dict(wrapped.net.state_dict())
    onnx_net.eval()
    dynamic = {0: "batch", 2: "y", 3: "x"}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(onnx_net, (torch.rand(1, in_channels, 4 * multiple, 4 * multiple),), str(path), opset_version=17,
                              dynamo=False, input_names=["raw"], output_names=["probabilities"],
                              dynamic_axes={"raw": dynamic, "probabilities": dynamic})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"raw": test_input.astype(np.float32)})[0]
    except Exception as exc:  # an exporter or runtime that cannot take the graph: leave the format out, say why
        return f"ONNX export failed ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    error = float(np.abs(got - test_output).max())
    if not error <= TOLERANCE["absolute"]:
        return f"ONNX weights differ from stainseg's output by {error:.2g}"
    return None


def _architecture_kwargs(model: Any) -> dict[str, Any]:
    cfg = model.network_config
    return {"in_channels": model.in_channels, "base_width": cfg.base_width, "depth": cfg.depth,
            "residual_blocks": cfg.residual_blocks, "head": cfg.head, **normalization_kwargs(model.preprocessing, model.in_channels)}


def _wrapper(model: Any) -> BioimageioStainNet:
    kwargs = _architecture_kwargs(model)
    wrapped = BioimageioStainNet(**kwargs)
    wrapped.init_kwargs = kwargs  # type: ignore[assignment]
    wrapped.net.load_state_dict(model.network.state_dict())
    return wrapped.eval()


def experiment_of(model: Any, model_dir: Path) -> Any:
    """The model's training experiment: ``model.experiment``, else ``MODEL/experiment.toml``, else None."""
    if model.experiment is not None:
        return model.experiment
    path = model_dir / "experiment.toml"
    if not path.is_file():
        return None
    from stainseg.config import load_config

    return load_config(path)


def sample_from_experiment(cfg: Any, input_channels: Sequence[str]) -> np.ndarray:
    """The first image set of the training experiment, as a raw (C, Y, X) stack of the input channels.

    Raises
    ------
    StainsegError
        The experiment folder is not reachable from here (give a sample image instead).
    """
    from stainseg.io.layout import scan

    hint = "give a sample image of the model's input channels (stainseg export MODEL --sample IMAGE)"
    try:
        sets = [s for s in scan(cfg).image_sets if all(ch in s.channels for ch in input_channels)]
    except StainsegError as exc:
        raise StainsegError(f"cannot read the training experiment for a test image ({exc}); {hint}") from None
    if not sets:
        raise StainsegError(f"the training experiment has no image set with channels {list(input_channels)}; {hint}", cfg.root_path)
    return sets[0].load_stack(list(input_channels))


def _centre_crop(stack: np.ndarray, size: int, multiple: int) -> np.ndarray:
    height, width = stack.shape[-2:]
    ny = min(size, height) // multiple * multiple
    nx = min(size, width) // multiple * multiple
    if ny < 2 * multiple or nx < 2 * multiple:
        raise StainsegError(f"sample image is {height} x {width} pixels; give one of at least {2 * multiple} x {2 * multiple}")
    y0, x0 = (height - ny) // 2, (width - nx) // 2
    return np.ascontiguousarray(stack[:, y0:y0 + ny, x0:x0 + nx])


def _stretch(plane: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(plane, [0.5, 99.8])
    return np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(plane)


def _cover(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """A 2:1 PNG: the first input channel | the same with the instances outlined."""
    from PIL import Image

    from stainseg.groundtruth import preview_png

    with tempfile.TemporaryDirectory() as tmp:
        preview_png(Path(tmp) / "outlines.png", image[0], labels)
        right = np.asarray(Image.open(Path(tmp) / "outlines.png").convert("RGB"))
    left = (np.repeat(_stretch(image[0])[..., None], 3, axis=-1) * 255).round().astype(np.uint8)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path, format="PNG")
    return path


def _torchscript(wrapped: BioimageioStainNet, in_channels: int, multiple: int) -> torch.jit.ScriptModule:
    """Trace the wrapper (StainNet's shape checks are not scriptable) and check it at another size.

    Inputs are multiples of ``multiple`` (the rdf says so), where the network pads nothing, so
    the trace holds for every allowed size; the check at a second size and batch makes sure.
    """
    import warnings

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, torch.rand(1, in_channels, 4 * multiple, 4 * multiple), check_trace=False)
        probe = torch.rand(2, in_channels, 6 * multiple, 9 * multiple, generator=torch.Generator().manual_seed(0))
        error = float((traced(probe) - wrapped(probe)).abs().max())
    if not error < 1e-4:
        raise StainsegError(f"the TorchScript trace differs from the network by {error:.2g} with torch {torch.__version__}; "
                            "export with another torch version")
    return traced


NORMALIZATION_TEXT = {
    "image": "per channel, scale the image's own 0.5th-99.5th percentile range to [0, 1], clip, and subtract the median of the result",
    "hybrid": ("per channel, scale the image's own 0.5th-99.5th percentile range to [0, 1], but never a range smaller than "
               "half the smallest relative contrast of the training images times the image's median level (a blank or "
               "noise-only field stays dark instead of being stretched), clip, and subtract the median of the result"),
    "training": ("per channel, map the training images' median relative 0.5th and 99.5th percentiles, times the image's "
                 "median level, to [0, 1], clip, and subtract the median of the result"),
}


def _normalization_text(mode: str, normalization: dict[str, Any]) -> str:
    """What the package's normalisation does, in words (the model's setting named)."""
    uses_stats = any(normalization["floor"]) or any(normalization["fixed"])
    if mode == "image":
        return NORMALIZATION_TEXT["image"] + ' (`normalization = "image"`)'
    if not uses_stats:
        return (NORMALIZATION_TEXT["image"] + f' (the model\'s setting is `normalization = "{mode}"`, but it holds no '
                'training statistics, so it normalises as `"image"`)')
    return NORMALIZATION_TEXT[mode] + f' (`normalization = "{mode}"`, with the training statistics in `model.json`)'


def _cells_text(model: Any) -> str:
    """README section of a model of cells grown from nuclei: the CellExtent step (with its stored parameters) the package leaves out.

    Empty for a model whose network segments its objects itself.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> _cells_text(Model.new(["phase"], objects="cells"))
    ''
    """
    extent = model.cell_extent
    if extent is None:
        return ""
    planes = ", ".join(model.plane_names)
    correction = (f"divided by its own spline background (grid {extent.spline_grid}, {extent.spline_iterations} iterations)"
                  if extent.illumination == "spline" else "used as it is (no illumination correction)")
    return f"""
## Cells are grown from the nuclei in stainseg, not in this package
The stainseg model this package comes from outputs whole **cells** (`objects = "cells"`, `cell_method = "nuclei"`:
it was trained with a nuclear stain only). Its network, the one in this package, segments **nuclei**; stainseg
then grows each nucleus into its cell over the label-free input with its `CellExtent` step
(`stainseg.groundtruth.extent.CellExtent`, method `{extent.method}`), the same recipe that made the automatic
cell labels. bioimage.io consumers (`bioimageio.core`, deepImageJ, ilastik, QuPath, napari) do **not** run that
step: from this package they get nuclei probabilities only. The step, with this model's parameters
(`model.json` `cell_extent`):

1. each raw input plane ({planes}) is {correction};
2. texture: Gaussian pre-smoothing of {extent.smoothing} px, local standard deviation in a Gaussian window of
   {extent.sigma} px, over the plane's median, averaged over the planes;
3. foreground: Otsu threshold of the log texture; pieces smaller than {extent.min_area_fraction} of the field's
   median nucleus area dropped; holes filled; the nuclei added;
4. cells: seeded watershed of the distance to the nearest nucleus inside the foreground; cell k holds nucleus k.

For the cells, run stainseg on the model folder (`stainseg segment MODEL IMAGE -o OUT`, or `stainseg.Model.run`:
`labels` are the cells, `nuclei` the nuclei), or grow your own nuclei labels in Python:
`CellExtent.from_dict(json.load(open("model.json"))["cell_extent"]).cells(raw_planes, nuclei_labels)`
(the raw planes, before the illumination step of the package's input: the step corrects them itself).
"""


def _documentation(model: Any, name: str, n_params: int, normalization: dict[str, Any], stainseg_version: str = "") -> str:
    channels = ", ".join(model.plane_names)
    objects = model.network_objects
    grown = model.cell_extent is not None
    classes = ", ".join(CLASS_NAMES[model.n_classes])
    pre = model.preprocessing
    spline = pre.illumination == "spline"
    how = _normalization_text(pre.normalization, normalization)
    s = model.segment_settings
    illumination = (f"The image must be illumination-corrected first, as stainseg does before the network: each plane is divided by "
                    f"a smooth spline background fitted to it (`stainseg.preprocess.correct_plane`, grid {pre.spline_grid}, "
                    f"{pre.spline_iterations} iterations). The test input of this package is the image after that step."
                    if spline else "The model takes its input planes as they are (no illumination correction).")
    title = f"{objects} network of a cells model" if grown else objects
    whose = (" It is the network of a stainseg model of whole cells, which grows the nuclei into cells outside this "
             "package (see [Cells](#cells-are-grown-from-the-nuclei-in-stainseg-not-in-this-package))." if grown else "")
    return f"""# stainseg model: {name} ({title})

A small fully convolutional network (StainNet, {n_params:,} parameters) that segments
{objects} in label-free images. It was trained by [stainseg](#citation) {stainseg_version} on labels made
automatically from end-point fluorescent stains (Sadanandan et al., Sci. Rep. 2017), not on manual annotations.{whose}

## Input
One tensor `raw` (batch, channel, y, x), channels in this order: **{channels}**.
{illumination}

## Normalisation (inside the network wrapper)
{how}. This is `stainseg.Model.prepare` after the illumination step, so the package sees what
`stainseg segment` gives the network; the rdf lists no pre-processing ops because they run in the
weights (both formats). Any intensity scale works. The whole image is one sample: percentiles and
medians are taken over what the network sees, so predict whole fields rather than small blocks
(stainseg takes them from a regular ~512 x 512 subsample; on fields over 1023 px a side the two
agree to about 1e-3).

## Output
One tensor `probabilities` (batch, channel, y, x) of softmax class probabilities of **{objects}**, channels **{classes}**.
stainseg turns them into {objects} instances with `stainseg.segment.instances.probability_to_labels`
(threshold {s.threshold}, minimum size {s.min_size} px, dilation {model.dilation}){', then into cells (below)' if grown else ''}:
`stainseg segment MODEL IMAGE -o OUT` does all of it, tiled ({s.tile_size} px tiles, {'two passes' if s.two_pass else 'one pass'}) for large images.
{_cells_text(model)}
## Weights
`weights.pt` (PyTorch state dict of `stainseg.export.bioimageio.BioimageioStainNet`, needs stainseg
installed) and `weights.torchscript.pt` (TorchScript, needs only PyTorch). `model.json` is the stainseg
model's own description (preprocessing with its training statistics, segmentation settings).

## Validation
The test output of this package was computed by stainseg itself (`Model.prepare` on the sample crop, then
the network on the whole crop) from the sample; `bioimageio test` reproduces it from the test input with both
weight formats. How well the model segments is measured in stainseg with `stainseg evaluate` against manual
or true masks (see the training report of the model, `MODEL/history.csv`: validation Dice against the
automatic labels).

## Limitations
The network learns what the automatic stain labels show; it is specific to the microscope, cell type
and channels it was trained on. Check it on a few of your images before relying on it.

## Citation
- {PAPER_TEXT} https://doi.org/{PAPER_DOI}
- {PROJECT_TEXT.format(version=stainseg.__version__)}{(' ' + PROJECT_URL) if PROJECT_URL else ''}
"""


def _environment(torch_version: str) -> str:
    return ("name: stainseg\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n  - python>=3.10\n"
            f"  - pytorch>={torch_version.split('+')[0]}\n  - pip\n  - pip:\n      - stainseg=={stainseg.__version__}\n")


def export_bioimageio(model_dir: str | Path, out_zip: str | Path, sample: str | Path | np.ndarray | None = None,
                      authors: Sequence[str] = ("stainseg developers",), license: str = "BSD-3-Clause") -> Path:
    """Write a BioImage Model Zoo package (zip) for a stainseg model folder.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``stainseg train``.
    out_zip : str or Path
        The package to write (``.zip``); written atomically.
    sample : str, Path or ndarray, optional
        A raw image of the model's input planes ((C, Y, X), or a file): its centre crop
        (at most 256 x 256), illumination-corrected as :meth:`stainseg.Model.prepare` does,
        becomes the test input and the cover. Default: the first image set of the training
        experiment (``model.experiment``, else ``MODEL/experiment.toml``), when its folder is reachable.
    authors : sequence of str
        Names for the ``authors`` field.
    license : str
        SPDX licence of the weights.

    Returns
    -------
    Path
        ``out_zip``.

    Raises
    ------
    StainsegError
        Unreadable model folder or sample, a sample with the wrong channels, no sample and no
        training experiment, or a description that ``bioimageio.spec`` rejects (the first errors are named).
    """
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as spec
    except ImportError:
        raise StainsegError("bioimage.io export needs bioimageio.spec; install it with: pip install 'stainseg[bioimageio]'") from None
    import json

    from stainseg.io.atomic import atomic_path
    from stainseg.io.images import read_image, write_image
    from stainseg.model import Model
    from stainseg.network import count_parameters
    from stainseg.preprocess import correct_plane
    from stainseg.segment.instances import probability_to_labels

    model_dir, out_zip = Path(model_dir), Path(out_zip)
    model = Model.load(model_dir, device="cpu")
    n_in, n_classes = model.in_channels, model.n_classes
    channel_names = list(model.plane_names)
    experiment = None
    if sample is None or model.experiment is not None or (model_dir / "experiment.toml").is_file():
        try:
            experiment = experiment_of(model, model_dir)
        except StainsegError as exc:
            if sample is None:
                raise StainsegError(f"cannot read the training experiment for a test image ({exc}); give a sample image of the "
                                    "model's input planes (stainseg export MODEL --sample IMAGE)") from None
    if sample is None:
        if experiment is None:
            raise StainsegError("has no experiment.toml to take a test image from; give a sample image of the model's input "
                                "planes (stainseg export MODEL --sample IMAGE)", model_dir)
        raw = sample_from_experiment(experiment, model.input_channels)
        where: Any = experiment.root_path
    elif isinstance(sample, np.ndarray):
        raw, where = sample, "sample"
    else:
        raw, where = read_image(sample), sample
    multiple = 2 ** model.network_config.depth
    raw = _centre_crop(model.arrange(np.asarray(raw), where), MAX_TEST_SIZE, multiple)
    # the package's input: the crop after illumination correction, the step of Model.prepare it does not do
    test_input = np.stack([correct_plane(plane, model.preprocessing) for plane in raw])[None]
    prepared = model.prepare(raw, where)  # the rest of Model.prepare: the normalisation, as stainseg segment does it
    network = model.network.float().eval()
    with torch.inference_mode():  # the expected output: stainseg's own preparation and network, whole crop in one pass
        test_output = torch.softmax(network(torch.from_numpy(prepared)[None]).float(), dim=1).numpy().astype(np.float32)
    labels = probability_to_labels(test_output[0], **model.instance_options())

    norm = normalization_kwargs(model.preprocessing, n_in)
    wrapped = _wrapper(model)
    with torch.inference_mode():  # the package must reproduce stainseg's output from its own test input
        again = wrapped(torch.from_numpy(test_input)).numpy()
    error = float(np.abs(again - test_output).max())
    if not error <= TOLERANCE["absolute"]:
        raise StainsegError(f"the package's network differs from stainseg's output by {error:.2g} on the test input "
                            f"(more than {TOLERANCE['absolute']}); this is a bug in the export, please report it", model_dir)
    try:
        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        version = str(meta.get("versions", {}).get("stainseg", ""))
    except (OSError, ValueError, AttributeError):
        version = ""
    name = (experiment.name if experiment is not None and experiment.name else "") or model_dir.name

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        np.save(tmp / "test_input.npy", test_input)
        np.save(tmp / "test_output.npy", test_output)
        write_image(tmp / "sample_input.tif", test_input[0], compress=False)
        write_image(tmp / "sample_output.tif", test_output[0], compress=False)
        torch.save(wrapped.state_dict(), tmp / "weights.pt")
        scripted = _torchscript(wrapped, n_in, multiple)
        scripted.save(str(tmp / "weights.torchscript.pt"))
        onnx_missing = _onnx_weights(wrapped, tmp / "weights.onnx", n_in, multiple, test_input, test_output)
        if onnx_missing:
            import sys

            print(f"stainseg export: no ONNX weights in the package ({onnx_missing}); it has the PyTorch formats", file=sys.stderr)
        _cover(tmp / "cover.png", test_input[0], labels)
        (tmp / "README.md").write_text(_documentation(model, name, count_parameters(model.network), norm, version), encoding="utf-8")
        (tmp / "environment.yaml").write_text(_environment(torch.__version__), encoding="utf-8")
        (tmp / "model.json").write_bytes((model_dir / "model.json").read_bytes())

        space = spec.ParameterizedSize(min=2 * multiple, step=multiple)
        inputs = [spec.InputTensorDescr(
            id=spec.TensorId("raw"),
            description=(f"{', '.join(channel_names)}; "
                         f"{'illumination-corrected (stainseg spline background), ' if model.preprocessing.illumination == 'spline' else ''}"
                         f"any intensity scale; normalised inside the network ({model.preprocessing.normalization})"),
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channel_names]),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=space), spec.SpaceInputAxis(id=spec.AxisId("x"), size=space)],
            test_tensor=spec.FileDescr(source=tmp / "test_input.npy"),
            sample_tensor=spec.FileDescr(source=tmp / "sample_input.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
        )]
        objects, grown = model.network_objects, model.cell_extent is not None
        outputs = [spec.OutputTensorDescr(
            id=spec.TensorId("probabilities"),
            description=(f"softmax probabilities of {', '.join(CLASS_NAMES[n_classes])} of {objects}"
                         + ("; stainseg grows cells from them (CellExtent), not this package" if grown else ""))[:128],
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in CLASS_NAMES[n_classes]]),
                  spec.SpaceOutputAxis(id=spec.AxisId("y"), size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId("y"))),
                  spec.SpaceOutputAxis(id=spec.AxisId("x"), size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId("x")))],
            test_tensor=spec.FileDescr(source=tmp / "test_output.npy"),
            sample_tensor=spec.FileDescr(source=tmp / "sample_output.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        )]
        torch_version = spec.Version(torch.__version__.split("+")[0])
        kwargs = _architecture_kwargs(model)
        weights = spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=tmp / "weights.pt", pytorch_version=torch_version,
                architecture=spec.ArchitectureFromLibraryDescr(import_from="stainseg.export.bioimageio",
                                                               callable=spec.Identifier("BioimageioStainNet"), kwargs=kwargs),
                dependencies=spec.FileDescr(source=tmp / "environment.yaml")),
            torchscript=spec.TorchscriptWeightsDescr(source=tmp / "weights.torchscript.pt", pytorch_version=torch_version,
                                                     parent="pytorch_state_dict"),
            onnx=None if onnx_missing else spec.OnnxWeightsDescr(source=tmp / "weights.onnx", opset_version=17,
                                                                 parent="pytorch_state_dict"),
        )
        cite = [spec.CiteEntry(text=PAPER_TEXT, doi=spec.Doi(PAPER_DOI))]
        if PROJECT_URL:
            cite.append(spec.CiteEntry(text=PROJECT_TEXT.format(version=stainseg.__version__), url=spec.HttpUrl(PROJECT_URL)))
        facts: dict[str, Any] = {"objects": model.objects, "network_objects": objects}
        if grown:
            facts["cell_extent"] = model.cell_extent.to_dict()
        descr = spec.ModelDescr(
            name=f"stainseg {objects} {name}"[:128],
            description=(f"Segments {objects} in label-free images ({', '.join(channel_names)}) with a network trained on "
                         "automatic labels from end-point fluorescent stains (stainseg, Sadanandan et al. 2017)."
                         + (" It is the nuclei network of a stainseg cells model: stainseg grows the nuclei into cells over the "
                            "label-free texture (CellExtent), a step bioimage.io consumers do not run." if grown else "")),
            authors=[spec.Author(name=name) for name in authors],
            cite=cite,
            license=spec.LicenseId(license),
            tags=["stainseg", "segmentation", "instance-segmentation", objects, "label-free", "bright-field", "2d", "pytorch"],
            documentation=spec.FileDescr(source=tmp / "README.md"),
            covers=[spec.FileDescr(source=tmp / "cover.png")],
            attachments=[spec.FileDescr(source=tmp / "model.json")],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            timestamp=spec.Datetime(datetime.datetime.now(datetime.timezone.utc)),
            version=spec.Version(stainseg.__version__),
            config=spec.Config(bioimageio=spec.BioimageioConfig(
                reproducibility_tolerance=[spec.ReproducibilityTolerance(relative_tolerance=TOLERANCE["relative"],
                                                                         absolute_tolerance=TOLERANCE["absolute"])],
                architecture_type="StainNet (encoder-decoder FCN)", model_parameter_count=count_parameters(model.network),
                task="semantic segmentation (class probabilities for instance segmentation)"), stainseg=facts),
        )
        if isinstance(descr, spec.ModelDescr) and descr.validation_summary.status == "failed":  # pragma: no cover
            raise StainsegError(f"bioimage.io description is invalid: {descr.validation_summary.format()[:300]}")
        save_bioimageio_package(descr, output_path=tmp / "package.zip")
        with atomic_path(out_zip) as tmp_zip:
            shutil.copyfile(tmp / "package.zip", tmp_zip)
    return out_zip
