"""Training data: the checked inputs, the split into training and validation, and random augmented batches.

:func:`prepare_data` turns prepared images and their instance labels into class targets, weight
images and the validation crops (whole held-out images, or a strip of every image when too few
fields would be held out); :func:`sample_batch` draws one augmented batch from them.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from stainseg.config import ExperimentConfig
from stainseg.errors import StainsegError
from stainseg.train.augment import jitter_intensity, random_sample, targets_from_labels
from stainseg.train.weights import class_weight_image, foreground_factor

__all__ = ["TrainData", "prepare_data", "sample_batch", "check_inputs", "MIN_VALIDATION_FIELDS"]


def check_inputs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> int:
    """The number of input channels of the prepared training images; one-line error for unusable inputs."""
    if len(images) == 0:
        raise StainsegError("no training images; check the experiment's pattern and channels")
    if len(images) != len(labels):
        raise StainsegError(f"{len(images)} training images but {len(labels)} label images; each image needs its labels")
    channels = None
    for i, (image, label) in enumerate(zip(images, labels)):
        if image.ndim != 3:
            raise StainsegError(f"training image {i} has shape {image.shape}; expected (channels, Y, X)")
        if channels is None:
            channels = image.shape[0]
        if image.shape[0] != channels:
            raise StainsegError(f"training image {i} has {image.shape[0]} channels but image 0 has {channels}; all inputs need the same channels")
        if label.shape != image.shape[1:]:
            raise StainsegError(f"training image {i} is {image.shape[1:]} but its labels are {label.shape}; they must match")
        if not np.isfinite(image).all():
            raise StainsegError(f"training image {i} contains NaN or inf pixels; fix the input files")
    return int(channels)


def _split(n_images: int, fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    if n_images < 2 or fraction <= 0:
        return list(range(n_images)), []
    n_val = min(n_images - 1, max(1, round(fraction * n_images)))
    order = rng.permutation(n_images)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


VALIDATION_IMAGES, VALIDATION_SIZE = 8, 256
#: Whole images are held out for validation only when at least this many would be; with fewer training
#: fields a single held-out field (one cell type, one exposure) would decide early stopping and the kept
#: weights, so a strip of every field is validated on instead.
MIN_VALIDATION_FIELDS = 2


def _validation_crops(images: list[np.ndarray], targets: list[np.ndarray], count: int, size: int):
    """The first ``count`` validation images, centre-cropped to at most ``size`` x ``size``."""
    out_images, out_targets = [], []
    for image, target in zip(images[:count], targets[:count]):
        ny, nx = target.shape
        y0, x0 = max(0, (ny - size) // 2), max(0, (nx - size) // 2)
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        out_images.append(np.ascontiguousarray(image[(slice(None),) + window]))
        out_targets.append(target[window])
    return out_images, out_targets


@dataclasses.dataclass
class TrainData:
    """Training and validation arrays made from prepared images and instance labels (:func:`prepare_data`).

    ``regions[i]`` is the part of image ``i`` that training crops come from (None: all of it);
    ``strips`` maps an image to the column where its validation strip starts (few images only).

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> lab = np.zeros((64, 64), int); lab[20:40, 20:40] = 1
    >>> data = prepare_data([lab[None].astype(np.float32)] * 5, [lab] * 5, ExperimentConfig(), np.random.default_rng(0))
    >>> len(data.images), len(data.val_images), data.foreground_factor > 1
    (5, 5, True)
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]
    weights: list[np.ndarray]
    train_idx: list[int]
    val_idx: list[int]
    regions: list[Optional[tuple[slice, slice]]]
    val_images: list[np.ndarray]
    val_targets: list[np.ndarray]
    strips: dict[int, int]
    foreground_fraction: float
    foreground_factor: float


def prepare_data(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: ExperimentConfig,
                 rng: np.random.Generator) -> TrainData:
    """Targets, pixel weights and the train / validation split of prepared images and their labels.

    When a ``validation_fraction`` of the images makes at least ``MIN_VALIDATION_FIELDS`` whole
    images, they are held out; otherwise every image is trained on and a strip on the right of each
    (that fraction wide, at least 32 px) is validated on instead. Validation images are centre-cropped to at most 256 x 256 and
    at most 8 are kept, so that validation stays cheap.

    Parameters
    ----------
    images : sequence of ndarray, shape (C, Y, X)
        Prepared network inputs.
    labels : sequence of ndarray, shape (Y, X), int
        Instance labels, one per image.
    cfg : ExperimentConfig
        Uses ``cfg.model.head`` and ``cfg.train`` (``validation_fraction``, ``separate_touching``,
        ``foreground_factor``).
    rng : numpy.random.Generator
        Draws the split (advanced only when whole images are held out).

    Returns
    -------
    TrainData

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> labels = [np.zeros((64, 64), int) for _ in range(14)]
    >>> for lab in labels:
    ...     lab[10:20, 10:20] = 1
    >>> images = [lab[None].astype(np.float32) for lab in labels]
    >>> data = prepare_data(images, labels, ExperimentConfig(), np.random.default_rng(0))
    >>> len(data.train_idx), len(data.val_idx), data.strips
    (12, 2, {})
    >>> len(prepare_data(images[:6], labels[:6], ExperimentConfig(), np.random.default_rng(0)).strips)
    6
    >>> prepare_data(images[:2], labels[:2], ExperimentConfig(), np.random.default_rng(0)).strips
    {0: 32, 1: 32}
    """
    tcfg = cfg.train
    images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
    targets = [targets_from_labels(lab, cfg.model.head, separate_touching=tcfg.separate_touching) for lab in labels]
    train_idx, val_idx = _split(len(images), tcfg.validation_fraction, rng)
    regions: list[Optional[tuple[slice, slice]]] = [None] * len(images)
    val_images: list[np.ndarray] = [images[i] for i in val_idx]
    val_targets: list[np.ndarray] = [targets[i] for i in val_idx]
    strips: dict[int, int] = {}
    if tcfg.validation_fraction > 0 and len(val_idx) < MIN_VALIDATION_FIELDS:
        # few images: train on all of them and validate on a strip on the right of each (fraction wide, >= 32 px)
        train_idx, val_images, val_targets = list(range(len(images))), [], []
        for i, image in enumerate(images):
            nx = image.shape[-1]
            cut = nx - max(32, int(round(tcfg.validation_fraction * nx)))
            if cut >= 32:
                strips[i] = cut
                regions[i] = (slice(None), slice(0, cut))
                val_images.append(image[:, :, cut:])
                val_targets.append(targets[i][:, cut:])
        val_idx = []
    val_images, val_targets = _validation_crops(val_images, val_targets, VALIDATION_IMAGES, VALIDATION_SIZE)
    fg_fraction = float(np.mean([np.mean(targets[i] > 0) for i in train_idx]))
    factor = foreground_factor(tcfg.foreground_factor, fg_fraction)
    weights = [class_weight_image(t > 0, factor) for t in targets]
    return TrainData(images, targets, weights, train_idx, val_idx, regions, val_images, val_targets, strips,
                     fg_fraction, factor)


def sample_batch(data: TrainData, batch_size: int, crop_size: int, rng: np.random.Generator,
                 rotate: bool = False, intensity: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of random augmented crops: inputs (B, C, S, S), targets (B, S, S) and weights (B, S, S).

    ``rotate`` and ``intensity``: ``[train] augment_rotate`` and ``augment_intensity``
    (:func:`~stainseg.train.augment.random_sample`, :func:`~stainseg.train.augment.jitter_intensity`).

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> lab = np.zeros((64, 64), int); lab[20:40, 20:40] = 1
    >>> data = prepare_data([lab[None].astype(np.float32)] * 4, [lab] * 4, ExperimentConfig(), np.random.default_rng(0))
    >>> [a.shape for a in sample_batch(data, 2, 32, np.random.default_rng(0))]
    [(2, 1, 32, 32), (2, 32, 32), (2, 32, 32)]
    """
    batch_x, batch_t, batch_w = [], [], []
    for _ in range(batch_size):
        i = data.train_idx[int(rng.integers(len(data.train_idx)))]
        x, (t, w) = random_sample(data.images[i], [data.targets[i], data.weights[i]], crop_size, rng, data.regions[i], rotate)
        x = jitter_intensity(x, rng, intensity)
        batch_x.append(x), batch_t.append(t), batch_w.append(w)
    return np.stack(batch_x), np.stack(batch_t), np.stack(batch_w)


