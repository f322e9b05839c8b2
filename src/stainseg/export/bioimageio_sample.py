"""The test image of a bioimage.io package: where it comes from, its crop, and the package's cover.

The sample is given, or taken from the first image set of the model's training experiment
(:func:`experiment_of`, :func:`sample_from_experiment`); :func:`centre_crop` cuts its centre to at
most :data:`MAX_TEST_SIZE` px a side, a multiple of the network's ``2 ** depth``; :func:`write_cover`
draws the cover (input | instances outlined).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["MAX_TEST_SIZE", "experiment_of", "sample_from_experiment", "centre_crop", "write_cover"]

MAX_TEST_SIZE = 256
"""Largest side of the test input (px)."""


def experiment_of(model: Any, model_dir: Path) -> Any:
    """The model's training experiment: ``model.experiment``, else ``MODEL/experiment.toml``, else None.

    Examples
    --------
    >>> from pathlib import Path
    >>> from stainseg.model import Model
    >>> experiment_of(Model.new(["BF"]), Path("no-such-model")) is None
    True
    """
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


def centre_crop(stack: np.ndarray, size: int, multiple: int) -> np.ndarray:
    """The centre of a (C, Y, X) stack, at most ``size`` px a side, each side a multiple of ``multiple``.

    Raises
    ------
    StainsegError
        The stack is smaller than ``2 * multiple`` px a side.

    Examples
    --------
    >>> import numpy as np
    >>> centre_crop(np.zeros((1, 150, 300)), 256, 8).shape
    (1, 144, 256)
    """
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


def write_cover(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """A 2:1 PNG: the first input channel | the same with the instances outlined.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> labels = np.zeros((32, 32), np.int32); labels[8:20, 8:20] = 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     Image.open(write_cover(Path(tmp) / "cover.png", np.random.default_rng(0).random((1, 32, 32)), labels)).size
    (64, 32)
    """
    from PIL import Image

    from stainseg.groundtruth import preview_png

    with tempfile.TemporaryDirectory() as tmp:
        preview_png(Path(tmp) / "outlines.png", image[0], labels)
        right = np.asarray(Image.open(Path(tmp) / "outlines.png").convert("RGB"))
    left = (np.repeat(_stretch(image[0])[..., None], 3, axis=-1) * 255).round().astype(np.uint8)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path, format="PNG")
    return path
