"""The Python front door: automatic labels, training, segmentation and scores on numpy arrays.

::

    import stainseg
    labels = stainseg.automatic_labels(nuclei=stain)
    model  = stainseg.train(images, label_images, out="MODEL", iterations=500)   # -> stainseg.Model
    # whole cells from a nuclear stain alone: cell labels + nuclei labels; the model finds nuclei, grows cells
    model  = stainseg.train(images, cell_labels, objects="cells", nuclei=nuclei_labels, out="MODEL")
    cells  = stainseg.Model.load("MODEL").segment(image)
    scores = stainseg.evaluate(truth, cells)

Each function is a thin layer over the library; the CLI runs the same code on files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError
from stainseg.model import Model

__all__ = ["automatic_labels", "train", "segment", "evaluate"]


def automatic_labels(nuclei: np.ndarray, cytoplasm: Optional[np.ndarray] = None, objects: str = "nuclei",
                     label_free: Optional[np.ndarray] = None, nucleus_diameter: Optional[float] = None,
                     illumination: str = "spline", with_qc: bool = False) -> Any:
    """Instance labels of one field made from its end-point stains (classical segmentation, METHOD.md 1).

    Parameters
    ----------
    nuclei : ndarray, shape (Y, X) or (Z, Y, X)
        The nuclear stain (z-planes are mean-projected).
    cytoplasm : ndarray, optional
        A cytoplasm / cell-body stain: cells by a nuclei-seeded watershed on it (``objects="cells"``).
    objects : {"nuclei", "cells"}
    label_free : ndarray, optional
        The label-free planes ((Y, X) or (C, Y, X)) of the same field: with ``objects="cells"`` and
        no cytoplasm stain, the cell extent comes from them.
    nucleus_diameter : float, optional
        Typical nucleus diameter in px; estimated from the image when not given.
    illumination : {"spline", "none"}
        Per-image spline flat-field correction of the stains, or none.
    with_qc : bool
        Also return the quality metrics of the labels.

    Returns
    -------
    labels : ndarray of int32, shape (Y, X)
        0 = background; a cell has its nucleus' label.
    qc : dict
        Only with ``with_qc``.

    Examples
    --------
    >>> from skimage.draw import disk
    >>> stain = np.full((96, 96), 100.0)
    >>> for c in [(30, 30), (60, 62)]:
    ...     stain[disk(c, 9)] = 1000.0
    >>> int(automatic_labels(nuclei=stain, illumination="none").max())
    2
    """
    from stainseg.config import GroundTruthConfig
    from stainseg.groundtruth.pipeline import groundtruth_for_set

    cfg = GroundTruthConfig(illumination=illumination, nucleus_diameter=nucleus_diameter)  # type: ignore[arg-type]
    stains = {"nuclei": np.asarray(nuclei)}
    if cytoplasm is not None:
        stains["cytoplasm"] = np.asarray(cytoplasm)
    kwargs: dict[str, Any] = {}
    if label_free is not None:
        kwargs["label_free"] = np.asarray(label_free)
    labels, qc, _ = groundtruth_for_set(stains, "nuclei", "cytoplasm" if cytoplasm is not None else None, objects, cfg, **kwargs)
    return (labels, qc) if with_qc else labels


def train(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], out: Optional[str | Path] = None, iterations: Optional[int] = None,
          objects: str = "nuclei", input_channels: Optional[Sequence[str]] = None, cfg: Any = None,
          progress: bool = True, nuclei: Optional[Sequence[np.ndarray]] = None, **train_options: Any) -> Model:
    """Train a model on images and their (automatic) labels; returns the calibrated :class:`Model`.

    The images are prepared by :meth:`Model.prepare`, the very step segmentation uses; after
    training, the instance settings are derived from the labels and calibrated on the
    validation crops, then the folder is written once (when ``out`` is given).

    Parameters
    ----------
    images : sequence of ndarray
        Raw label-free images: 2-D planes, or (C, Y, X) stacks with one plane per input channel.
    labels : sequence of ndarray
        Instance labels (Y, X) of each image (e.g. from :func:`automatic_labels`).
    out : str or Path, optional
        The model folder to write; None keeps the model in memory only.
    iterations : int, optional
        Training iterations (default: the ``fast`` preset's 1000).
    objects : {"nuclei", "cells"}
        Ignored when ``cfg`` is given (its ``objects`` counts).
    input_channels : sequence of str, optional
        Names of the input channels (default ``channel0`` ...).
    cfg : ExperimentConfig, optional
        All settings; ``iterations`` and ``train_options`` override its ``[train]`` keys.
    progress : bool
        Show a progress bar.
    nuclei : sequence of ndarray, optional
        For ``objects="cells"``: the nuclei labels of each image (e.g. ``automatic_labels(nuclei=stain)``
        beside ``automatic_labels(nuclei=stain, objects="cells", label_free=image)``). With them the
        network learns the nuclei and the model grows each into its cell over the label-free image by
        the recipe of the automatic cell labels (``cell_method = "nuclei"``, the default without a
        cytoplasm stain; on real phase contrast far better than a network learning the cells). Without
        them, ``cell_method = "auto"`` trains a network on the cell labels themselves.
    **train_options
        Any ``[train]`` key (``seed``, ``crop_size``, ``max_minutes`` ...).

    Examples
    --------
    >>> from skimage.draw import disk
    >>> rng = np.random.default_rng(0)
    >>> lab = np.zeros((96, 96), np.int32)
    >>> for i, c in enumerate([(25, 25), (60, 30), (40, 70)], 1):
    ...     lab[disk(c, 10)] = i
    >>> img = rng.normal(100.0, 5.0, lab.shape) - 40.0 * (lab > 0)
    >>> model = train([img, img[::-1]], [lab, lab[::-1]], iterations=4, crop_size=64, progress=False)
    >>> model.segment(img).shape
    (96, 96)
    """
    from stainseg.config import ExperimentConfig
    from stainseg.train.fit import fit_model

    import copy

    cfg = copy.deepcopy(cfg) if cfg is not None else ExperimentConfig(objects=objects)  # type: ignore[arg-type]
    if cfg.objects == "cells" and cfg.cell_method == "auto" and nuclei is None:
        cfg.cell_method = "network"  # only the cell labels are given: the network learns them
    if iterations is not None:
        train_options["iterations"] = iterations
    for key, value in train_options.items():
        if not hasattr(cfg.train, key):
            raise StainsegError(f"unknown training option {key!r}; see [train] in docs/configuration.md")
        setattr(cfg.train, key, value)
    raws = [np.asarray(im) for im in images]
    if len(raws) != len(labels):
        raise StainsegError(f"{len(raws)} images but {len(labels)} label images; each image needs its labels")
    names = list(input_channels) if input_channels else None
    with tempfile.TemporaryDirectory(prefix="stainseg-train-") as tmp:
        folder = Path(out) if out is not None else Path(tmp) / "model"  # in memory only: checkpoints in a temp folder
        model = fit_model(raws, [np.asarray(lab) for lab in labels], cfg, folder, input_channels=names, progress=progress,
                          nuclei=None if nuclei is None else [np.asarray(lab) for lab in nuclei])
    if model is None:
        raise StainsegError("training stopped before the end; no model was made")
    if out is None:
        model.path = None
    return model


def segment(model: Model | str | Path, image: Any, **overrides: Any) -> np.ndarray:
    """Instance labels of one image with a model (a :class:`Model` or its folder); the same as ``Model.segment``.

    ``image`` may be an array (or a list of planes) or an image file path.

    Examples
    --------
    >>> import numpy as np, stainseg
    >>> model = stainseg.Model.new(["DNA"])           # untrained: random weights
    >>> image = np.random.default_rng(0).gamma(2.0, 50.0, (64, 64))
    >>> segment(model, image).shape
    (64, 64)
    """
    if not isinstance(model, Model):
        model = Model.load_cached(model)
    if isinstance(image, (str, Path)):
        from stainseg.io.images import check_not_mask, read_image

        return model.run(check_not_mask(read_image(image), image), where=image, **overrides)["labels"]
    return model.segment(image, **overrides)


def evaluate(truth: np.ndarray, pred: np.ndarray, fscore_threshold: float = 0.6, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Scores of predicted labels against true labels: the paper's per-object F-score and F1 / AP at IoU.

    Returns
    -------
    dict
        ``percent_f_above`` (% of true objects with F >= ``fscore_threshold``), ``median_f``,
        ``n_truth``, ``n_pred``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` and ``ap``
        at ``iou_threshold``, ``mean_ap`` over IoU 0.5..0.95, ``iou_sweep``.

    Examples
    --------
    >>> a = np.zeros((20, 20), int); a[2:8, 2:8] = 1; a[10:18, 10:18] = 2
    >>> s = evaluate(a, a)
    >>> s["percent_f_above"], s["f1"]
    (100.0, 1.0)
    """
    from stainseg.evaluate.summary import evaluate_pair

    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise StainsegError(f"truth {truth.shape} and prediction {pred.shape} differ in shape; give labels of the same image")
    return evaluate_pair(truth, pred, fscore_threshold=fscore_threshold, iou_threshold=iou_threshold)
