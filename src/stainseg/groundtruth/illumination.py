"""Illumination correction by iterative spline fitting of the background (METHOD.md 1.1, 2.1).

CellProfiler's "Splines" method: fit a smooth tensor-product B-spline surface to the background of
a down-sampled image, exclude the pixels that lie clearly above the fit (foreground), re-fit, and
iterate. The first fit starts from the blocks below a log-Otsu threshold of the block medians, so that
a large, evenly dim confluent patch is not taken for background. The image is divided by the
fitted field, normalised to mean 1, so intensities keep their scale. The fit runs on block medians (about 64 x 64 of them), so a 2048 x 2048 image takes a
fraction of a second; only the 4 x 4 block means and the final evaluation touch every pixel
(strided 4 x 4 block means and the mean-1 scaling done on the spline coefficients made it 2-2.5x
faster than a float copy, reshape means and passes over the full field: benchmarks/prepost_speed.py).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from stainseg.errors import StainsegError
from stainseg.io.images import as_float

#: Target number of blocks per image side for the down-sampled fit.
FIT_BLOCKS = 64


def _as_plane(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = as_float(np.asarray(image))
    if image.ndim != 2:
        raise StainsegError(f"{what} must be one 2-D plane, got shape {image.shape}; correct each z-slice separately")
    if min(image.shape) < 2:
        raise StainsegError(f"{what} is only {image.shape[0]} x {image.shape[1]} pixels; too small for illumination correction")
    return image


def _check_plane(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate one plane (2-D, large enough, no NaN) without converting an integer plane to float."""
    image = np.asarray(image)
    if image.dtype == bool or not np.issubdtype(image.dtype, np.integer):
        return _as_plane(image, what)
    if image.ndim != 2:
        raise StainsegError(f"{what} must be one 2-D plane, got shape {image.shape}; correct each z-slice separately")
    if min(image.shape) < 2:
        raise StainsegError(f"{what} is only {image.shape[0]} x {image.shape[1]} pixels; too small for illumination correction")
    return image


def _mean4(crop: np.ndarray) -> np.ndarray:
    """Means of 4 x 4 blocks (sides divisible by 4) in float32, by strided adds.

    Three adds along each axis over strided views: ~4x faster than ``reshape(...).mean(axis=(1, 3))``
    and it reads an integer plane directly (no float copy of the whole plane). On integer planes
    the sums are exact, so the result is the same bit for bit.
    """
    cols = np.add(crop[:, 0::4], crop[:, 1::4], dtype=np.float32)
    cols += crop[:, 2::4]
    cols += crop[:, 3::4]
    out = cols[0::4] + cols[1::4]
    out += cols[2::4]
    out += cols[3::4]
    out *= np.float32(1 / 16)
    return out


def block_medians(image: np.ndarray, blocks: int = FIT_BLOCKS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Down-sample a plane to the median of square blocks.

    Large blocks are first averaged 4 x 4 (cheap) and the median is taken of those means, which
    keeps the median's robustness to foreground at a fraction of the cost.

    Parameters
    ----------
    image : (Y, X) ndarray
    blocks : int
        About this many blocks along the shorter side.

    Returns
    -------
    medians : (ny, nx) ndarray of float32
    yc, xc : 1-D ndarrays
        Block centres in pixel coordinates of ``image``.

    Examples
    --------
    >>> medians, yc, xc = block_medians(np.ones((256, 320), np.uint16), blocks=8)
    >>> medians.shape, float(yc[0])
    ((8, 10), 15.5)
    """
    image = _check_plane(image)
    size = max(1, min(image.shape) // blocks)
    ny, nx = image.shape[0] // size, image.shape[1] // size
    crop = image[: ny * size, : nx * size]
    pre = 4 if size >= 16 and size % 4 == 0 else 1
    if pre > 1:
        crop = _mean4(crop)
    else:
        crop = crop.astype(np.float32, copy=False)
    inner = size // pre
    tiles = crop.reshape(ny, inner, nx, inner).transpose(0, 2, 1, 3).reshape(ny, nx, inner * inner)
    medians = np.median(tiles, axis=-1).astype(np.float32)
    yc = (np.arange(ny) + 0.5) * size - 0.5
    xc = (np.arange(nx) + 0.5) * size - 0.5
    return medians, yc, xc


def bspline_design(coords: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """B-spline basis functions of ``order`` on ``knots`` at ``coords``: a dense (len(coords), len(knots) - order - 1) matrix.

    The Cox-de Boor recursion in numpy: the same values as ``scipy.interpolate.BSpline.design_matrix``
    for coordinates in ``[knots[order], knots[-order - 1])``, without importing ``scipy.interpolate``
    (with ``scipy.optimize`` and ``scipy.sparse`` behind it, 0.1-0.2 s of every segmentation's start-up).

    Examples
    --------
    >>> knots = np.array([0, 0, 0, 0, 1, 2, 2, 2, 2], float)
    >>> b = bspline_design(np.array([0.0, 0.5, 1.5]), knots, 3)
    >>> b.shape, bool(np.allclose(b.sum(axis=1), 1))
    ((3, 5), True)
    """
    x = np.asarray(coords, np.float64)[:, None]
    t = np.asarray(knots, np.float64)
    basis = ((t[:-1] <= x) & (x < t[1:])).astype(np.float64)  # order 0: the knot span of each point
    for k in range(1, order + 1):
        left_span, right_span = t[k:-1] - t[:-k - 1], t[k + 1:] - t[1:-k]
        with np.errstate(divide="ignore", invalid="ignore"):
            left = np.where(left_span > 0, (x - t[:-k - 1]) / left_span, 0.0)
            right = np.where(right_span > 0, (t[k + 1:] - x) / right_span, 0.0)
        basis = left * basis[:, :-1] + right * basis[:, 1:]
    return basis


def _basis(coords: np.ndarray, length: int, grid: int) -> np.ndarray:
    """Clamped cubic (or lower order) B-spline basis with ``grid`` functions over [-0.5, length - 0.5]."""
    order = int(min(3, grid - 1))
    n_inner = grid - order - 1
    lo, hi = -0.5, length - 0.5
    knots = np.concatenate([[lo] * (order + 1), np.linspace(lo, hi, n_inner + 2)[1:-1], [hi] * (order + 1)])
    coords = np.clip(np.asarray(coords, np.float64), lo, hi - 1e-9)
    return bspline_design(coords, knots, order)


def _initial_background(values: np.ndarray, min_blocks: int) -> np.ndarray:
    """Blocks to start the fit from: those below an Otsu threshold of the log block medians.

    Without it, a large, evenly dim cell-covered region (a confluent patch) pulls the first fit up
    and then hides among the "background". Falls back to all blocks when the split is not clear
    (too few blocks below the threshold).
    """
    from skimage.filters import threshold_otsu

    keep = np.ones(values.shape, bool)
    positive = values[values > 0]
    if positive.size < min_blocks or positive.min() == positive.max():
        return keep
    threshold = np.exp(threshold_otsu(np.log(positive)))
    below = values <= threshold
    return below if below.sum() >= max(min_blocks, values.size // 4) else keep


def _fit_surface(values: np.ndarray, yc: np.ndarray, xc: np.ndarray, shape: tuple[int, int],
                 grid: int, iterations: int, exclusion: float, normalise: bool = False) -> np.ndarray:
    """Iteratively fit a smooth tensor B-spline surface to the background of a block-median image.

    The surface of :func:`_fit_coefficients`, evaluated on the full pixel grid separably
    (``By @ C @ Bx.T``), which costs two thin matrix products; with ``normalise`` it is scaled
    to mean 1 (:func:`_evaluate`).
    """
    coef = _fit_coefficients(values, yc, xc, shape, grid, iterations, exclusion)
    if coef is None:  # a flat surface: its normalised field is all ones
        return np.ones(shape, np.float32) if normalise else np.full(shape, float(np.median(values)), np.float32)
    return _evaluate(coef, shape, normalise)


def _fit_coefficients(values: np.ndarray, yc: np.ndarray, xc: np.ndarray, shape: tuple[int, int],
                      grid: int, iterations: int, exclusion: float) -> np.ndarray | None:
    """(grid, grid) spline coefficients of the background of a block-median image, or None when flat.

    Least squares on the blocks still counted as background; after each fit, blocks more than
    ``exclusion`` robust standard deviations above it are excluded.
    """
    by, bx = _basis(yc, shape[0], grid), _basis(xc, shape[1], grid)
    design = (by[:, None, :, None] * bx[None, :, None, :]).reshape(yc.size * xc.size, grid * grid)
    z = values.ravel().astype(np.float64)
    keep = _initial_background(z, min_blocks=2 * grid * grid)
    coef = None
    for _ in range(max(1, iterations)):
        if keep.sum() < 2 * grid * grid:  # too few background blocks left: keep the last fit
            break
        # normal equations: a 25 x 25 system (rows.T @ rows: 7x faster than the einsum it replaces)
        rows = design[keep]
        gram = rows.T @ rows + 1e-9 * np.eye(grid * grid)
        coef = np.linalg.solve(gram, rows.T @ z[keep])
        residual = z - design @ coef
        r_bg = residual[keep]
        centre = np.median(r_bg)
        scale = 1.4826 * np.median(np.abs(r_bg - centre))
        if scale <= 0:
            break
        new_keep = residual <= centre + exclusion * scale  # foreground lies above the background fit
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return None if coef is None else coef.reshape(grid, grid)


def _evaluate(coef: np.ndarray, shape: tuple[int, int], normalise: bool) -> np.ndarray:
    """The tensor spline ``By @ coef @ Bx.T`` on the full pixel grid, optionally scaled to mean 1.

    With ``normalise``, the scale is applied to the (grid x grid) coefficients before the one
    full-size matrix product: the mean of the surface over all pixels is
    ``mean(By) @ coef @ mean(Bx)``, exactly, and a B-spline lies between its smallest and largest
    coefficient. A fit can dip towards zero at a corner with no background, so the field is
    clamped at 0.1 (never amplify by more than 10x) and re-scaled to mean 1; when the smallest
    scaled coefficient is at least 0.1 the clamp cannot change a pixel and no pass over the full
    field is needed.
    """
    grid = coef.shape[0]
    full_y = _basis(np.arange(shape[0]), shape[0], grid)
    full_x = _basis(np.arange(shape[1]), shape[1], grid)
    if normalise:
        mean = float(full_y.mean(axis=0) @ coef @ full_x.mean(axis=0))
        if not np.isfinite(mean) or mean <= 0:
            return np.ones(shape, np.float32)
        coef = coef / mean
    rows_y = (full_y @ coef).astype(np.float32)
    field = rows_y @ full_x.T.astype(np.float32)  # (Y, grid) @ (grid, X): one thin matrix product
    if normalise and float(coef.min()) < 0.1:
        np.maximum(field, 0.1, out=field)
        field /= field.mean()
    return field


def background_field(image: np.ndarray, grid: int = 5, iterations: int = 5, exclusion: float = 2.0) -> np.ndarray:
    """Fit the illumination field of one plane by iterative spline fitting of its background.

    Parameters
    ----------
    image : (Y, X) ndarray
        One plane (one channel, one z-slice). NaN or infinite pixels raise :class:`StainsegError`.
    grid : int
        Spline control points per image side (``GroundTruthConfig.spline_grid``).
    iterations : int
        Fit / exclude-foreground rounds (``GroundTruthConfig.spline_iterations``).
    exclusion : float
        Blocks more than this many robust standard deviations above the fit count as foreground.

    Returns
    -------
    field : (Y, X) ndarray of float32
        Multiplicative illumination field with mean 1.
    """
    if grid < 2:
        raise StainsegError(f"spline_grid must be at least 2 (got {grid}); set groundtruth.spline_grid in the experiment file")
    image = _check_plane(image)
    medians, yc, xc = block_medians(image)
    return _fit_surface(medians, yc, xc, image.shape, grid, iterations, exclusion, normalise=True)


def apply_field(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Divide an image (2-D, or a stack of planes on the first axis) by an illumination field."""
    image = as_float(np.asarray(image))
    field = np.asarray(field, np.float32)
    if image.shape[-2:] != field.shape:
        raise StainsegError(f"illumination field has shape {field.shape} but the image has {image.shape[-2:]}; "
                            "compute the field from images of the same size")
    return image / field


def correct_illumination(image: np.ndarray, grid: int = 5, iterations: int = 5,
                         exclusion: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Correct one plane, or every plane of a (Z, Y, X) stack separately, by spline background fitting.

    Returns
    -------
    corrected : ndarray of float32, same shape as ``image``
        ``image / field``.
    field : ndarray of float32
        The field(s), mean 1 per plane; same shape as ``image``.
    """
    image = as_float(np.asarray(image))
    if image.ndim == 2:
        field = background_field(image, grid, iterations, exclusion)
        return image / field, field
    if image.ndim == 3:
        fields = np.stack([background_field(plane, grid, iterations, exclusion) for plane in image])
        return image / fields, fields
    raise StainsegError(f"expected a 2-D plane or a (Z, Y, X) stack, got shape {image.shape}")


def _planes_of_one_size(images: Iterable[np.ndarray], what: str) -> Iterator[np.ndarray]:
    """Each image checked as a plane (:func:`_check_plane`); one of another size than the first is a one-line error."""
    shape = None
    for i, image in enumerate(images):
        image = _check_plane(image, f"image {i}")
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise StainsegError(f"image {i} has shape {image.shape} but the first has {shape}; {what} needs images of one size")
        yield image


def flat_field(images: Iterable[np.ndarray], grid: int = 5, iterations: int = 5,
               exclusion: float = 2.0) -> np.ndarray:
    """One flat-field from many planes: the median of their fitted background fields, each of mean 1.

    For a plate whose illumination does not change from image to image: a model can store this
    field and divide every later image by it (:func:`apply_field`) instead of fitting each one.
    Unlike :func:`plate_illumination` (one fit to the median of the raw block medians), each plane
    gets its own iterative background fit first, with its own foreground excluded, so images with
    many cells in different places do not bias the shared field. The per-plane fields are combined
    on the ~64 x 64 grid of block centres (any number of planes fits in memory), the median is
    fitted by the same tensor spline, and the field is evaluated once at full size.

    Parameters
    ----------
    images : iterable of (Y, X) ndarrays
        Planes of one channel (and one z-level), all the same shape.
    grid, iterations, exclusion
        As in :func:`background_field`.

    Returns
    -------
    field : (Y, X) ndarray of float32, mean 1
        Divide every image of the channel by it (:func:`apply_field`).

    Examples
    --------
    >>> yy, xx = np.mgrid[0:128, 0:160]
    >>> gradient = 1 + 0.5 * xx / 159
    >>> plane = np.random.default_rng(0).normal(100, 2, (128, 160)) * gradient
    >>> plane[(yy % 32 < 8) & (xx % 40 < 8)] += 300  # "cells"
    >>> field = flat_field([plane, 2 * plane, plane])
    >>> field.shape, round(float(field.mean()), 4), bool(np.abs(field / (gradient / gradient.mean()) - 1).max() < 0.01)
    ((128, 160), 1.0, True)
    """
    coarse = []
    shape = None
    by = bx = yc = xc = None
    for image in _planes_of_one_size(images, "a flat-field"):
        shape = image.shape
        medians, yc, xc = block_medians(image)
        if by is None:
            by, bx = _basis(yc, shape[0], grid), _basis(xc, shape[1], grid)
            mean_y = _basis(np.arange(shape[0]), shape[0], grid).mean(axis=0)
            mean_x = _basis(np.arange(shape[1]), shape[1], grid).mean(axis=0)
        coef = _fit_coefficients(medians, yc, xc, shape, grid, iterations, exclusion)
        mean = float(mean_y @ coef @ mean_x) if coef is not None else 0.0
        if coef is None or not np.isfinite(mean) or mean <= 0:
            coarse.append(np.ones((yc.size, xc.size)))  # a flat (or empty) plane: a flat field
        else:
            coarse.append(by @ (coef / mean) @ bx.T)  # its field (mean 1) at the block centres
    if not coarse:
        raise StainsegError("no images given for the flat-field; check the channel name and pattern")
    combined = np.median(np.stack(coarse), axis=0)
    # the median of smooth fields is smooth: one plain least-squares fit on the full tensor grid
    # (separable: pinv(By) @ M @ pinv(Bx).T), no foreground to exclude
    coef = np.linalg.pinv(by) @ combined @ np.linalg.pinv(bx).T
    return _evaluate(coef, shape, normalise=True)


def plate_illumination(images: Iterable[np.ndarray], grid: int = 5, iterations: int = 5,
                       exclusion: float = 2.0) -> np.ndarray:
    """One illumination function for a channel from many images (CellProfiler's "All" images mode).

    Each image is reduced to block medians (so any number of images fits in memory), each is
    scaled to median 1 so bright images do not dominate, the per-block median over all images is
    taken, and the spline background fit of :func:`background_field` smooths it.

    Parameters
    ----------
    images : iterable of (Y, X) ndarrays
        Planes of one channel (and one z-level), all the same shape.

    Returns
    -------
    field : (Y, X) ndarray of float32, mean 1
        Divide every image of the channel by it (:func:`apply_field`).
    """
    reduced = []
    shape = None
    yc = xc = None
    for image in _planes_of_one_size(images, "a plate illumination function"):
        shape = image.shape
        medians, yc, xc = block_medians(image)
        level = float(np.median(medians))
        reduced.append(medians / level if level > 0 else medians)
    if not reduced:
        raise StainsegError("no images given for the plate illumination function; check the channel name and pattern")
    combined = np.median(np.stack(reduced), axis=0)
    return _fit_surface(combined, yc, xc, shape, grid, iterations, exclusion, normalise=True)
