"""Write a stainseg model directory as a BioImage Model Zoo package (``stainseg export``).

The package (a zip with ``rdf.yaml`` per the current ``bioimageio.spec`` model format 0.5) holds:

- TorchScript weights and PyTorch state-dict weights (architecture :class:`BioimageioStainNet`,
  importable from this module);
- a test input (the sample image, centre crop) and the test output computed by stainseg itself;
- a cover image (input | automatic instances outlined), ``README.md`` documentation, an
  ``environment.yaml`` and the citations of the paper and of stainseg.

What the package computes, and where it stops (written into its documentation too):

- input: the model's input channels, illumination-corrected (stainseg's spline flat-field runs
  before the network in ``stainseg segment`` when ``groundtruth.illumination = "spline"``; the
  package takes the image after that step — the test input is exactly that);
- pre-processing: ``scale_range`` (per channel, percentiles 0.5-99.5) and ``clip`` to [0, 1], the
  bioimage.io ops for :func:`stainseg.preprocess.normalize`; its last step (subtract the
  per-channel median) has no bioimage.io op and runs inside the network wrapper;
- output: per-pixel class probabilities (softmax). Instances (threshold, watershed, dilation)
  come from ``stainseg.segment.instances.probability_to_labels`` in stainseg, as for StarDist.

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

__all__ = ["BioimageioStainNet", "export_bioimageio", "sample_from_experiment", "PAPER_DOI", "CLASS_NAMES"]

PAPER_DOI = "10.1038/s41598-017-07599-6"
PAPER_TEXT = ("Sadanandan, S. K., Ranefall, P., Le Guyader, S. & Wählby, C. Automated training of deep convolutional "
              "neural networks for cell segmentation. Sci. Rep. 7, 7860 (2017).")
PROJECT_TEXT = "stainseg {version}: segment label-free cell images with a network trained on automatic labels from end-point stains."
PROJECT_URL: Optional[str] = None
"""The project's public address, cited in every package when set (the lead sets it once public)."""
CLASS_NAMES = {2: ["background", "foreground"], 3: ["background", "interior", "boundary"]}
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5  # stainseg.preprocess.normalize defaults
MAX_TEST_SIZE = 256


class BioimageioStainNet(nn.Module):
    """StainNet for bioimage.io: (clipped, range-scaled input) → median-centred → network → softmax.

    Parameters
    ----------
    in_channels, base_width, depth, residual_blocks : int
        :class:`stainseg.config.ModelConfig` fields.
    head : str
        ``"2class"`` or ``"3class"``.

    Notes
    -----
    ``net`` is the stainseg network unchanged, so ``net.*`` in the state dict are the weights of
    ``MODEL/model.pt``.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 8, depth: int = 3, residual_blocks: int = 4,
                 head: str = "3class") -> None:
        super().__init__()
        self.net = StainNet(ModelConfig(in_channels=in_channels, base_width=base_width, depth=depth,
                                        residual_blocks=residual_blocks, head=head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, K, Y, X) from a (N, C, Y, X) input already scaled to [0, 1]."""
        median = torch.quantile(x.flatten(2), 0.5, dim=2)  # = numpy's median (averages the middle two)
        return torch.softmax(self.net(x - median[:, :, None, None]).float(), dim=1)


def _wrapper(model: StainNet, cfg: ModelConfig) -> BioimageioStainNet:
    wrapped = BioimageioStainNet(model.in_channels, cfg.base_width, cfg.depth, cfg.residual_blocks, cfg.head)
    wrapped.net.load_state_dict(model.state_dict())
    return wrapped.eval()


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


def _documentation(meta: dict[str, Any], cfg: Any, n_params: int, tile: int) -> str:
    channels = ", ".join(meta.get("input_channels", []))
    classes = ", ".join(CLASS_NAMES[int(meta["n_classes"])])
    spline = cfg.groundtruth.illumination == "spline"
    return f"""# stainseg model: {cfg.name or 'unnamed experiment'} ({meta.get('objects', cfg.objects)})

A small fully convolutional network (StainNet, {n_params:,} parameters) that segments
{meta.get('objects', cfg.objects)} in label-free images. It was trained by
[stainseg](#citation) {meta.get('versions', {}).get('stainseg', '')} on labels made automatically from end-point
fluorescent stains (Sadanandan et al., Sci. Rep. 2017), not on manual annotations.

## Input
One tensor `raw` (batch, channel, y, x), channels in this order: **{channels}**.
{"The image must be illumination-corrected first: stainseg fits a smooth spline background to each plane (`stainseg.groundtruth.correct_illumination`, grid " + str(cfg.groundtruth.spline_grid) + ") before the network. The test input of this package is the image after that step." if spline else "The model was trained without per-image illumination correction of its input."}
Pre-processing (in this package): per channel, scale the 0.5th-99.5th percentile range to [0, 1] and clip
(`scale_range`, `clip`); the network wrapper then subtracts the per-channel median, which completes
`stainseg.preprocess.normalize`. Any intensity scale works (the scaling is by percentiles).
The whole image is one sample: the median is taken over what the network sees, so predict whole
fields rather than small blocks.

## Output
One tensor `probabilities` (batch, channel, y, x) of softmax class probabilities, channels **{classes}**.
stainseg turns them into instances with `stainseg.segment.instances.probability_to_labels`
(threshold {meta.get('threshold')}, dilation {meta.get('dilation')}): `stainseg segment MODEL IMAGE -o OUT`
does all of it, tiled ({tile} px tiles, two passes) for large images.

## Weights
`weights.pt` (PyTorch state dict of `stainseg.export.bioimageio.BioimageioStainNet`, needs stainseg
installed) and `weights.torchscript.pt` (TorchScript, needs only PyTorch).

## Validation
The test output of this package was computed by stainseg itself (its normalisation and network) from
the test input; `bioimageio test` reproduces it with both weight formats. How well the model segments
is measured in stainseg with `stainseg evaluate` against manual or true masks (see the training
report of the model, `MODEL/history.csv`: validation Dice against the automatic labels).

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
    """Write a BioImage Model Zoo package (zip) for a stainseg model directory.

    Parameters
    ----------
    model_dir : str or Path
        A folder written by ``stainseg train``.
    out_zip : str or Path
        The package to write (``.zip``); written atomically.
    sample : str, Path or ndarray, optional
        A raw image of the model's input channels ((C, Y, X), or a file): its centre crop
        (at most 256 x 256) becomes the test input and the cover. Default: the first image set
        of the training experiment (``MODEL/config.toml``), when its folder is reachable.
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
        Unreadable model folder or sample, a sample with the wrong channels, or a description
        that ``bioimageio.spec`` rejects (the first errors are named).
    """
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as spec
    except ImportError:
        raise StainsegError("bioimage.io export needs bioimageio.spec; install it with: pip install 'stainseg[bioimageio]'") from None
    from stainseg.io.atomic import atomic_path
    from stainseg.io.images import as_float, read_image, write_image
    from stainseg.modeldir import load_model
    from stainseg.preprocess import normalize
    from stainseg.segment.instances import probability_to_labels
    from stainseg.segment.stage import as_channels_first
    from stainseg.network import count_parameters

    model_dir, out_zip = Path(model_dir), Path(out_zip)
    model, cfg, meta = load_model(model_dir)
    n_in, n_classes = int(meta["in_channels"]), int(meta["n_classes"])
    channel_names = list(meta.get("input_channels") or [f"channel{i}" for i in range(n_in)])
    if sample is None:
        raw = sample_from_experiment(cfg, channel_names)
        where: Any = cfg.root_path
    elif isinstance(sample, np.ndarray):
        raw, where = sample, "sample"
    else:
        raw, where = read_image(sample), sample
    raw = as_channels_first(as_float(np.asarray(raw), where), n_in, where)
    multiple = 2 ** cfg.model.depth
    raw = _centre_crop(raw, MAX_TEST_SIZE, multiple)
    if cfg.groundtruth.illumination == "spline":  # the step before the network that the package does not do
        from stainseg.groundtruth.illumination import correct_illumination

        raw, _ = correct_illumination(raw, grid=cfg.groundtruth.spline_grid, iterations=cfg.groundtruth.spline_iterations)
    test_input = np.asarray(raw, dtype=np.float32)[None]

    wrapped = _wrapper(model, cfg.model)
    with torch.inference_mode():  # the expected output, by stainseg's own normalisation and network
        logits = model.float()(torch.from_numpy(normalize(test_input[0]))[None])
        test_output = torch.softmax(logits.float(), dim=1).numpy().astype(np.float32)
    labels = probability_to_labels(test_output[0], dilation=cfg.dilation(), **cfg.segment.instance_options())

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        np.save(tmp / "test_input.npy", test_input)
        np.save(tmp / "test_output.npy", test_output)
        write_image(tmp / "sample_input.tif", test_input[0], compress=False)
        write_image(tmp / "sample_output.tif", test_output[0], compress=False)
        torch.save(wrapped.state_dict(), tmp / "weights.pt")
        scripted = _torchscript(wrapped, n_in, multiple)
        scripted.save(str(tmp / "weights.torchscript.pt"))
        _cover(tmp / "cover.png", test_input[0], labels)
        (tmp / "README.md").write_text(_documentation(meta, cfg, count_parameters(model), cfg.segment.tile_size), encoding="utf-8")
        (tmp / "environment.yaml").write_text(_environment(torch.__version__), encoding="utf-8")
        (tmp / "config.toml").write_bytes((model_dir / "config.toml").read_bytes())
        (tmp / "model.json").write_bytes((model_dir / "model.json").read_bytes())

        space = spec.ParameterizedSize(min=2 * multiple, step=multiple)
        inputs = [spec.InputTensorDescr(
            id=spec.TensorId("raw"),
            description=f"{', '.join(channel_names)}; illumination-corrected, any intensity scale",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in channel_names]),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=space), spec.SpaceInputAxis(id=spec.AxisId("x"), size=space)],
            test_tensor=spec.FileDescr(source=tmp / "test_input.npy"),
            sample_tensor=spec.FileDescr(source=tmp / "sample_input.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=[spec.AxisId("y"), spec.AxisId("x")],
                                                                  min_percentile=LOW_PERCENTILE, max_percentile=HIGH_PERCENTILE)),
                spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0)),
            ],
        )]
        outputs = [spec.OutputTensorDescr(
            id=spec.TensorId("probabilities"),
            description=f"softmax probabilities of {', '.join(CLASS_NAMES[n_classes])}",
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(c) for c in CLASS_NAMES[n_classes]]),
                  spec.SpaceOutputAxis(id=spec.AxisId("y"), size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId("y"))),
                  spec.SpaceOutputAxis(id=spec.AxisId("x"), size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId("x")))],
            test_tensor=spec.FileDescr(source=tmp / "test_output.npy"),
            sample_tensor=spec.FileDescr(source=tmp / "sample_output.tif"),
            data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        )]
        torch_version = spec.Version(torch.__version__.split("+")[0])
        kwargs = {"in_channels": n_in, "base_width": cfg.model.base_width, "depth": cfg.model.depth,
                  "residual_blocks": cfg.model.residual_blocks, "head": cfg.model.head}
        weights = spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=tmp / "weights.pt", pytorch_version=torch_version,
                architecture=spec.ArchitectureFromLibraryDescr(import_from="stainseg.export.bioimageio",
                                                               callable=spec.Identifier("BioimageioStainNet"), kwargs=kwargs),
                dependencies=spec.FileDescr(source=tmp / "environment.yaml")),
            torchscript=spec.TorchscriptWeightsDescr(source=tmp / "weights.torchscript.pt", pytorch_version=torch_version,
                                                     parent="pytorch_state_dict"),
        )
        cite = [spec.CiteEntry(text=PAPER_TEXT, doi=spec.Doi(PAPER_DOI))]
        if PROJECT_URL:
            cite.append(spec.CiteEntry(text=PROJECT_TEXT.format(version=stainseg.__version__), url=spec.HttpUrl(PROJECT_URL)))
        objects = meta.get("objects", cfg.objects)
        descr = spec.ModelDescr(
            name=f"stainseg {objects} {cfg.name or model_dir.name}"[:128],
            description=(f"Segments {objects} in label-free images ({', '.join(channel_names)}) with a network trained on "
                         "automatic labels from end-point fluorescent stains (stainseg, Sadanandan et al. 2017)."),
            authors=[spec.Author(name=name) for name in authors],
            cite=cite,
            license=spec.LicenseId(license),
            tags=["stainseg", "segmentation", "instance-segmentation", objects, "label-free", "bright-field", "2d", "pytorch"],
            documentation=spec.FileDescr(source=tmp / "README.md"),
            covers=[spec.FileDescr(source=tmp / "cover.png")],
            attachments=[spec.FileDescr(source=tmp / "config.toml"), spec.FileDescr(source=tmp / "model.json")],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            timestamp=spec.Datetime(datetime.datetime.now(datetime.timezone.utc)),
            version=spec.Version(stainseg.__version__),
            config=spec.Config(bioimageio=spec.BioimageioConfig(
                reproducibility_tolerance=[spec.ReproducibilityTolerance(relative_tolerance=1e-3, absolute_tolerance=2e-3)],
                architecture_type="StainNet (encoder-decoder FCN)", model_parameter_count=count_parameters(model),
                task="semantic segmentation (class probabilities for instance segmentation)")),
        )
        if isinstance(descr, spec.ModelDescr) and descr.validation_summary.status == "failed":  # pragma: no cover
            raise StainsegError(f"bioimage.io description is invalid: {descr.validation_summary.format()[:300]}")
        save_bioimageio_package(descr, output_path=tmp / "package.zip")
        with atomic_path(out_zip) as tmp_zip:
            shutil.copyfile(tmp / "package.zip", tmp_zip)
    return out_zip
