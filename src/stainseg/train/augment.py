"""Training targets and augmentation (METHOD.md 2.2, 2.5).

Each training sample: random left-right and up-down flips, then a random crop from the image
extended by mirroring to 3 x 3 its size, applied identically to the image and to every per-pixel
array that goes with it (class targets, weights). The 3 x 3 extension is never built: crop
indices are reflected into the image, which gives exactly ``np.pad(mode="symmetric")`` followed
by a crop, with no memory cost. Everything is drawn from one ``numpy.random.Generator`` so that
a run is reproducible from its seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.segmentation import find_boundaries

__all__ = ["targets_from_labels", "mirror_extend", "mirror_crop", "random_sample", "jitter_intensity", "BACKGROUND", "INTERIOR", "BOUNDARY"]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def touching_pixels(labels: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour that belongs to a different object (not background)."""
    labels = np.asarray(labels)
    touch = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        a = labels.take(range(0, labels.shape[axis] - 1), axis=axis)
        b = labels.take(range(1, labels.shape[axis]), axis=axis)
        differ = (a != b) & (a > 0) & (b > 0)
        lead = [slice(None)] * 2
        lead[axis] = slice(0, labels.shape[axis] - 1)
        trail = [slice(None)] * 2
        trail[axis] = slice(1, labels.shape[axis])
        touch[tuple(lead)] |= differ
        touch[tuple(trail)] |= differ
    return touch


def targets_from_labels(labels: np.ndarray, head: str = "3class", boundary_mode: str = "inner",
                        separate_touching: bool = False) -> np.ndarray:
    """Per-pixel class targets from an instance label image.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X)
        Instance labels, 0 = background.
    head : {"2class", "3class"}
        2class: 0 background, 1 foreground. 3class: 0 background, 1 interior, 2 boundary.
    boundary_mode : str
        ``skimage.segmentation.find_boundaries`` mode for the boundary class. ``"inner"`` (default)
        keeps every boundary pixel inside its object, so interior + boundary is exactly the
        object; it also marks where touching objects meet.

    separate_touching : bool
        2class only: pixels where two objects touch become background, so that the network learns
        to leave a gap between touching objects and the watershed separates them.

    Returns
    -------
    ndarray of uint8, shape (Y, X)

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((7, 7), int); labels[1:6, 1:6] = 1
    >>> targets_from_labels(labels)[3]                 # background, boundary, interior, boundary, background
    array([0, 2, 1, 1, 1, 2, 0], dtype=uint8)
    >>> targets_from_labels(labels, head="2class")[3]
    array([0, 1, 1, 1, 1, 1, 0], dtype=uint8)
    """
    labels = np.asarray(labels)
    foreground = labels > 0
    if head == "2class":
        if separate_touching:  # a background line where two objects meet (as in U-Net), so they separate
            foreground &= ~touching_pixels(labels)
        return foreground.astype(np.uint8)
    if head != "3class":
        raise ValueError(f"unknown head {head!r}; use '2class' or '3class'")
    targets = foreground.astype(np.uint8)
    boundary = find_boundaries(labels, connectivity=1, mode=boundary_mode, background=0)
    targets[boundary] = BOUNDARY
    return targets


def mirror_extend(array: np.ndarray) -> np.ndarray:
    """The 3 x 3 mirror extension of the last two axes (for reference and tests; crops use :func:`mirror_crop`).

    Examples
    --------
    >>> import numpy as np
    >>> mirror_extend(np.array([[1, 2]]))
    array([[2, 1, 1, 2, 2, 1],
           [2, 1, 1, 2, 2, 1],
           [2, 1, 1, 2, 2, 1]])
    """
    ny, nx = array.shape[-2:]
    pad = [(0, 0)] * (array.ndim - 2) + [(ny, ny), (nx, nx)]
    return np.pad(array, pad, mode="symmetric")


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices of the infinitely mirror-extended axis onto [0, n) ('symmetric': edge repeated)."""
    index = np.mod(index, 2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def mirror_crop(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of the mirror-extended last two axes starting at (top, left).

    ``top`` and ``left`` may be negative or beyond the image: ``mirror_crop(a, t, l, s)`` equals
    ``mirror_extend(a)[..., t + Y : t + Y + s, l + X : l + X + s]`` whenever that lies inside.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(12).reshape(3, 4)
    >>> np.array_equal(mirror_crop(a, -2, -1, 4), mirror_extend(a)[1:5, 3:7])
    True
    """
    ny, nx = array.shape[-2:]
    rows = _reflect(np.arange(top, top + size), ny)
    cols = _reflect(np.arange(left, left + size), nx)
    return array[..., rows[:, None], cols[None, :]]


def random_sample(
    image: np.ndarray,
    targets: Sequence[np.ndarray],
    crop_size: int,
    rng: np.random.Generator,
    region: tuple[slice, slice] | None = None,
    rotate: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One augmented training sample: the same flips and crop for the image and every target.

    Parameters
    ----------
    image : ndarray, shape (C, Y, X)
    targets : sequence of ndarray, shape (Y, X)
        Per-pixel arrays aligned with the image (class targets, weight image, ...).
    crop_size : int
        Side of the square crop; may exceed the image (the mirror extension repeats).
    rng : numpy.random.Generator
        Source of all randomness (two flips, two crop offsets).
    region : (slice, slice), optional
        Restrict sampling to this part of the image (e.g. the training part of a single image
        whose other part is held out for validation).
    rotate : bool
        Also transpose the crop with probability 1/2: with the two flips, all eight rotations and
        reflections of the square (one more draw from ``rng`` after the crop offsets).

    Returns
    -------
    image_crop : ndarray, shape (C, crop_size, crop_size)
    target_crops : list of ndarray, shape (crop_size, crop_size)

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((2, 50, 60)).astype(np.float32)
    >>> labels = np.zeros((50, 60), np.uint8); labels[10:30, 10:30] = 1
    >>> crop, (target,) = random_sample(image, [labels], 32, np.random.default_rng(1))
    >>> crop.shape, target.shape
    ((2, 32, 32), (32, 32))
    """
    if region is not None:
        image = image[(slice(None),) + tuple(region)]
        targets = [t[tuple(region)] for t in targets]
    ny, nx = image.shape[-2:]
    for t in targets:
        if t.shape != (ny, nx):
            raise ValueError(f"target shape {t.shape} differs from image shape {(ny, nx)}")
    flip_y, flip_x = rng.random(2) < 0.5
    # crop origin anywhere in the 3 x 3 mirror extension, i.e. in [-n, 2n - size]
    top = int(rng.integers(-ny, max(-ny, 2 * ny - crop_size) + 1))
    left = int(rng.integers(-nx, max(-nx, 2 * nx - crop_size) + 1))
    transpose = bool(rotate and rng.random() < 0.5)

    def apply(a: np.ndarray) -> np.ndarray:
        if flip_y:
            a = a[..., ::-1, :]
        if flip_x:
            a = a[..., :, ::-1]
        a = mirror_crop(a, top, left, crop_size)
        return np.ascontiguousarray(np.swapaxes(a, -1, -2) if transpose else a)

    return apply(image), [apply(t) for t in targets]


def jitter_intensity(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A prepared crop with each plane's contrast and level changed at random (intensity augmentation).

    Plane ``c`` becomes ``g * x + b * spread``: the gain ``g = exp(u)`` with ``u`` uniform in
    ``[-strength, strength]`` and the shift ``b`` uniform in ``[-strength, strength]`` times the
    plane's inter-quartile spread. It teaches the network that a nucleus is a shape, not a grey
    level: other exposures, lamps and cameras shift both (issue 16: a field of the same cells with
    10x lower phase intensities).

    Parameters
    ----------
    image : ndarray, shape (C, Y, X), float
        A prepared (normalised) crop.
    rng : numpy.random.Generator
        Two draws per plane.
    strength : float
        0 returns the crop unchanged (no draws).

    Examples
    --------
    >>> x = np.linspace(-1, 1, 32 * 32, dtype=np.float32).reshape(1, 32, 32)
    >>> y = jitter_intensity(x, np.random.default_rng(0), 0.3)
    >>> y.shape, y.dtype, bool(np.allclose(x, y))
    ((1, 32, 32), dtype('float32'), False)
    """
    if not strength:
        return image
    out = np.empty_like(image)
    for c, plane in enumerate(image):
        gain = np.exp(rng.uniform(-strength, strength))
        q1, q3 = np.percentile(plane[::4, ::4], [25, 75])
        shift = rng.uniform(-strength, strength) * max(float(q3 - q1), 1e-3)
        out[c] = plane * gain + shift
    return out
