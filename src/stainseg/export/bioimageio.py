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

The parts live in their own modules: the network wrapper in :mod:`stainseg.export.bioimageio_net`,
the TorchScript and ONNX weights in :mod:`stainseg.export.bioimageio_weights`, the test image and
cover in :mod:`stainseg.export.bioimageio_sample`, the README and environment in
:mod:`stainseg.export.bioimageio_readme`; this module puts them together and writes the rdf.

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

import stainseg
from stainseg.errors import StainsegError
from stainseg.export.bioimageio_net import CLASS_NAMES, BioimageioStainNet, architecture_kwargs, normalization_kwargs, wrap_network
from stainseg.export.bioimageio_readme import environment_yaml, readme_text
from stainseg.export.bioimageio_sample import MAX_TEST_SIZE, centre_crop, experiment_of, sample_from_experiment, write_cover
from stainseg.export.bioimageio_weights import TOLERANCE, onnx_weights, torchscript_weights

__all__ = ["BioimageioStainNet", "export_bioimageio", "sample_from_experiment", "normalization_kwargs", "PAPER_DOI", "CLASS_NAMES"]

PAPER_DOI = "10.1038/s41598-017-07599-6"
PAPER_TEXT = ("Sadanandan, S. K., Ranefall, P., Le Guyader, S. & Wählby, C. Automated training of deep convolutional "
              "neural networks for cell segmentation. Sci. Rep. 7, 7860 (2017).")
PROJECT_TEXT = "stainseg {version}: segment label-free cell images with a network trained on automatic labels from end-point stains."
PROJECT_URL: Optional[str] = None
"""The project's public address, cited in every package when set (the lead sets it once public)."""


def citations() -> list[str]:
    """The package README's citations: the paper (with its DOI) and stainseg (with :data:`PROJECT_URL` when set).

    Examples
    --------
    >>> citations()[0].endswith("https://doi.org/10.1038/s41598-017-07599-6")
    True
    """
    project = PROJECT_TEXT.format(version=stainseg.__version__) + ((" " + PROJECT_URL) if PROJECT_URL else "")
    return [f"{PAPER_TEXT} https://doi.org/{PAPER_DOI}", project]


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
    from stainseg.segment.upscale import instance_labels

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
    factor = model.preprocessing.downsample  # a working scale: the package averages f x f blocks itself
    multiple = 2 ** model.network_config.depth * factor
    raw = centre_crop(model.arrange(np.asarray(raw), where), MAX_TEST_SIZE, multiple)
    # the package's input: the crop after illumination correction, the step of Model.prepare it does not do
    test_input = np.stack([correct_plane(plane, model.preprocessing) for plane in raw])[None]
    prepared = model.prepare(raw, where)  # the rest of Model.prepare: the normalisation, as stainseg segment does it
    network = model.network.float().eval()
    with torch.inference_mode():  # the expected output: stainseg's own preparation and network, whole crop in one pass
        test_output = torch.softmax(network(torch.from_numpy(prepared)[None]).float(), dim=1).numpy().astype(np.float32)
    labels = instance_labels(test_output[0], model.instance_options(), factor, raw.shape)
    if factor > 1:
        from stainseg.scale import upsample_linear

        test_output = upsample_linear(test_output, factor, raw.shape)

    norm = normalization_kwargs(model.preprocessing, n_in)
    wrapped = wrap_network(model)
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
        scripted = torchscript_weights(wrapped, n_in, multiple)
        scripted.save(str(tmp / "weights.torchscript.pt"))
        onnx_missing = onnx_weights(wrapped, tmp / "weights.onnx", n_in, multiple, test_input, test_output)
        if onnx_missing:
            import sys

            print(f"stainseg export: no ONNX weights in the package ({onnx_missing}); it has the PyTorch formats", file=sys.stderr)
        write_cover(tmp / "cover.png", test_input[0], labels)
        (tmp / "README.md").write_text(readme_text(model, name, count_parameters(model.network), norm, version, citations()),
                                       encoding="utf-8")
        (tmp / "environment.yaml").write_text(environment_yaml(torch.__version__), encoding="utf-8")
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
        kwargs = architecture_kwargs(model)
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
