"""The words of a bioimage.io package: its ``README.md`` and ``environment.yaml``.

:func:`readme_text` says what the package takes and gives: the input planes and the illumination
step before it, the model's normalisation in words (:func:`normalization_text`), the output
classes and how stainseg makes instances of them, and, for a model of cells grown from nuclei, the
:class:`stainseg.groundtruth.extent.CellExtent` step that the package leaves out (:func:`cells_text`).
"""

from __future__ import annotations

from typing import Any, Sequence

import stainseg
from stainseg.export.bioimageio_net import CLASS_NAMES

__all__ = ["NORMALIZATION_TEXT", "normalization_text", "cells_text", "readme_text", "environment_yaml"]

NORMALIZATION_TEXT = {
    "image": "per channel, scale the image's own 0.5th-99.5th percentile range to [0, 1], clip, and subtract the median of the result",
    "hybrid": ("per channel, scale the image's own 0.5th-99.5th percentile range to [0, 1], but never a range smaller than "
               "half the smallest relative contrast of the training images times the image's median level (a blank or "
               "noise-only field stays dark instead of being stretched), clip, and subtract the median of the result"),
    "training": ("per channel, map the training images' median relative 0.5th and 99.5th percentiles, times the image's "
                 "median level, to [0, 1], clip, and subtract the median of the result"),
}


def normalization_text(mode: str, normalization: dict[str, Any]) -> str:
    """What the package's normalisation does, in words (the model's setting named).

    Parameters
    ----------
    mode : str
        The model's ``preprocessing.normalization``.
    normalization : dict
        :func:`stainseg.export.bioimageio_net.normalization_kwargs` of the model.

    Examples
    --------
    >>> normalization_text("hybrid", {"floor": [0.0], "fixed": [False]})[-51:]
    'training statistics, so it normalises as `"image"`)'
    """
    uses_stats = any(normalization["floor"]) or any(normalization["fixed"])
    if mode == "image":
        return NORMALIZATION_TEXT["image"] + ' (`normalization = "image"`)'
    if not uses_stats:
        return (NORMALIZATION_TEXT["image"] + f' (the model\'s setting is `normalization = "{mode}"`, but it holds no '
                'training statistics, so it normalises as `"image"`)')
    return NORMALIZATION_TEXT[mode] + f' (`normalization = "{mode}"`, with the training statistics in `model.json`)'


def cells_text(model: Any) -> str:
    """README section of a model of cells grown from nuclei: the CellExtent step (with its stored parameters) the package leaves out.

    Empty for a model whose network segments its objects itself.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> cells_text(Model.new(["phase"], objects="cells"))
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


def readme_text(model: Any, name: str, n_params: int, normalization: dict[str, Any], stainseg_version: str = "",
                citations: Sequence[str] = ()) -> str:
    """The package's ``README.md``.

    Parameters
    ----------
    model : stainseg.Model
        The model exported.
    name : str
        The package's name (the experiment's, else the model folder's).
    n_params : int
        Parameters of the network.
    normalization : dict
        :func:`stainseg.export.bioimageio_net.normalization_kwargs` of the model.
    stainseg_version : str
        The stainseg version that trained the model ("" when unknown).
    citations : sequence of str
        One line each under "Citation".

    Examples
    --------
    >>> from stainseg.export.bioimageio_net import normalization_kwargs
    >>> from stainseg.model import Model
    >>> model = Model.new(["BF"])
    >>> text = readme_text(model, "demo", 1000, normalization_kwargs(model.preprocessing, 1), citations=["A paper."])
    >>> lines = text.splitlines()
    >>> lines[0], lines[-2:]
    ('# stainseg model: demo (nuclei)', ['## Citation', '- A paper.'])
    """
    channels = ", ".join(model.plane_names)
    objects = model.network_objects
    grown = model.cell_extent is not None
    classes = ", ".join(CLASS_NAMES[model.n_classes])
    pre = model.preprocessing
    spline = pre.illumination == "spline"
    how = normalization_text(pre.normalization, normalization)
    s = model.segment_settings
    illumination = (f"The image must be illumination-corrected first, as stainseg does before the network: each plane is divided by "
                    f"a smooth spline background fitted to it (`stainseg.preprocess.correct_plane`, grid {pre.spline_grid}, "
                    f"{pre.spline_iterations} iterations). The test input of this package is the image after that step."
                    if spline else "The model takes its input planes as they are (no illumination correction).")
    f = pre.downsample
    scale = (f" The wrapper then averages {f} x {f} blocks (the model's working scale, `preprocessing.downsample`) and "
             f"interpolates its probabilities back bilinearly, so y and x must be multiples of {2 ** model.network_config.depth * f}."
             if f > 1 else "")
    at_scale = f" at 1/{f} of the resolution" if f > 1 else ""
    title = f"{objects} network of a cells model" if grown else objects
    whose = (" It is the network of a stainseg model of whole cells, which grows the nuclei into cells outside this "
             "package (see [Cells](#cells-are-grown-from-the-nuclei-in-stainseg-not-in-this-package))." if grown else "")
    cite = "\n".join(f"- {line}" for line in citations)
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
agree to about 1e-3).{scale}

## Output
One tensor `probabilities` (batch, channel, y, x) of softmax class probabilities of **{objects}**, channels **{classes}**.
stainseg turns them into {objects} instances with `stainseg.segment.instances.probability_to_labels`
(threshold {s.threshold}, minimum size {s.min_size} px, dilation {model.dilation}{at_scale}){', then into cells (below)' if grown else ''}:
`stainseg segment MODEL IMAGE -o OUT` does all of it, tiled ({s.tile_size} px tiles, {'two passes' if s.two_pass else 'one pass'}) for large images.
{cells_text(model)}
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
{cite}
"""


def environment_yaml(torch_version: str) -> str:
    """The package's conda ``environment.yaml``: PyTorch at least ``torch_version`` and this stainseg from pip.

    Examples
    --------
    >>> environment_yaml("2.13.0+cpu").splitlines()[6]
    '  - pytorch>=2.13.0'
    """
    return ("name: stainseg\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n  - python>=3.10\n"
            f"  - pytorch>={torch_version.split('+')[0]}\n  - pip\n  - pip:\n      - stainseg=={stainseg.__version__}\n")
