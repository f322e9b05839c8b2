"""Quality measures: per-channel statistics of a raw image stack and of a label image, and their summary
over the training images (:func:`reference_statistics`), which :mod:`stainseg.quality.flags` compares new images with.

Every measure is computed per input channel on the raw ``(C, Y, X)`` stack and is chosen to be
*exposure-invariant* where it should be: a 10x dimmer copy of a field is not blank and not out of
focus (it may only be flagged ``dim``). The measures are ratios of contrasts:

* ``noise`` - the robust per-pixel noise sigma, from the MAD of a second difference (a 1-D Laplacian)
  in a grid of full-resolution tiles: ``x[i-1] - 2 x[i] + x[i+1]`` has variance ``6 sigma**2`` for white
  noise and is near zero on smooth signal, so its median absolute value measures the camera noise.
* ``signal`` - the largest local contrast: over 64 x 64 tiles of the field, the 99.5th minus the 50th
  percentile, maximum over tiles. Tiles make it immune to uneven illumination; the maximum keeps a
  field with a single nucleus non-blank.
* ``snr`` = signal / noise. Noise alone gives about 3 (the 99.5th percentile of a Gaussian is 2.6
  sigma); a blank field (an empty well, a noise-only frame) stays below :data:`BLANK_SNR`.
* ``sharpness`` - in the 8 tiles with the most contrast, after a 1 px Gaussian (against shot noise),
  the 99th percentile of |Laplacian| over the 99th percentile of |gradient| (the background noise's
  share of each removed in quadrature), in 1/px. Shot noise inside bright objects is not removed: on
  a shot-noise-limited field a strong defocus lowers it only about 1.6x (see the tests). A step edge blurred by a Gaussian of sigma ``s`` px gives
  ``1 / (s sqrt(e))``: defocus divides it, exposure (which scales both) does not change it.
* ``saturated`` - the fraction of pixels at the image's own maximum (a plateau means clipping;
  in a normal image the maximum is held by a handful of pixels).
* texture: ``asymmetry`` = (p99 - p50) / (p99 - p1) (bright objects on a dark background give ~1,
  phase contrast ~0.5), ``coverage`` (fraction of pixels above half the way from the median to the
  99.9th percentile) and ``band1`` .. ``band16`` (the share of the noise-corrected variance of a
  Laplacian pyramid at scales 1, 2, 4, 8, 16 px: where the structure lies).

Examples
--------
>>> import numpy as np
>>> noise = np.random.default_rng(0).poisson(150, (256, 256)).astype(np.uint16)
>>> s = plane_statistics(noise)                 # a camera frame with nothing in it
>>> bool(s["snr"] < BLANK_SNR)
True
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["plane_statistics", "image_statistics", "object_statistics", "reference_statistics", "BLANK_SNR", "TEXTURE_MEASURES"]

#: Below this signal-to-noise (largest local contrast / noise sigma) a channel is blank; noise alone gives ~3.
BLANK_SNR = 6.0
_TILE = 64           # tile side (on the strided sample) for local contrast
_GRID_TILE = 128     # full-resolution tiles for noise and texture
_MAX_GRID = 16       # at most this many grid tiles per channel
_MAX_TOP = 8         # tiles with the most contrast, for sharpness
_SAMPLE = 1 << 18    # pixels in the strided sample used for percentiles
_BANDS = (1, 2, 4, 8, 16)
#: The texture measures of :func:`plane_statistics` that :func:`stainseg.quality.flags.check_image` compares.
TEXTURE_MEASURES = ("asymmetry", *(f"band{b}" for b in _BANDS))


def _as_stack(stack: np.ndarray) -> np.ndarray:
    stack = np.asarray(stack)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"expected a (C, Y, X) stack, got shape {stack.shape}")
    return stack


def _tiles(img: np.ndarray, side: int) -> np.ndarray:
    """(n, side, side) view of the whole tiles of ``img`` (the ragged border is left out)."""
    ny, nx = img.shape[0] // side, img.shape[1] // side
    if ny == 0 or nx == 0:
        side_y, side_x = img.shape
        return img[None, :side_y, :side_x]
    t = img[:ny * side, :nx * side].reshape(ny, side, nx, side).swapaxes(1, 2)
    return t.reshape(ny * nx, side, side)


def _median_abs(d: np.ndarray) -> float:
    """Median of ``|d|``; exact and by counting when ``d`` holds integers of a modest range (the
    usual case: second differences of a camera image), by partial sorting otherwise."""
    if d.size == 0:
        return 0.0
    if d.dtype.kind == "i":
        a = np.abs(d)
        top = int(a.max())
        if top < (1 << 22):
            cum = np.cumsum(np.bincount(a, minlength=top + 1))
            n = d.size
            lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))  # the ((n-1)//2)-th smallest value
            hi = int(np.searchsorted(cum, n // 2, side="right"))        # the (n//2)-th
            return 0.5 * (lo + hi)
    return float(np.median(np.abs(d)))


def _noise_sigma(tiles: np.ndarray, integer: bool) -> float:
    """Robust noise sigma from the MAD of second differences along both axes."""
    if integer and tiles.size and int(tiles.max()) < 8192 and int(tiles.min()) >= 0:
        t = tiles.astype(np.int16, copy=False)   # |second difference| <= 4 x 8191 fits; 12-bit cameras
    elif integer and tiles.dtype.itemsize <= 2:
        t = tiles.astype(np.int32, copy=False)
    else:
        t = tiles.astype(np.float32, copy=False)
    dx = (t[:, :, :-2] - 2 * t[:, :, 1:-1] + t[:, :, 2:]).ravel()
    dy = (t[:, :-2, :] - 2 * t[:, 1:-1, :] + t[:, 2:, :]).ravel()
    d = np.concatenate([dx, dy])
    sigma = 1.4826 * _median_abs(d) / math.sqrt(6.0) if d.size else 0.0
    if integer:  # quantisation: a rounded value carries at least 1/sqrt(12) counts of noise
        sigma = max(sigma, 1.0 / math.sqrt(12.0))
    return sigma


def _band_energies(tiles: np.ndarray, sigma: float) -> np.ndarray:
    """Noise-corrected variance of a Laplacian pyramid (block means) at scales 1, 2, 4, 8, 16 px.

    The detail band of a 2 x 2 block-mean step has, per block, ``sum x**2 - 4 mean**2`` as its
    energy, so its mean square is ``mean(x**2) - mean(coarse**2)``: no up-sampled copy is needed.
    """
    x = tiles.astype(np.float64, copy=False)
    out = np.zeros(len(_BANDS))
    for k in range(len(_BANDS)):
        n, h, w = x.shape
        if h < 2 or w < 2:
            break
        h2, w2 = h // 2 * 2, w // 2 * 2
        x = x[:, :h2, :w2]
        coarse = x.reshape(n, h2 // 2, 2, w2 // 2, 2).mean(axis=(2, 4))
        detail_power = float(np.einsum("ijk,ijk->", x, x)) / x.size - float(np.einsum("ijk,ijk->", coarse, coarse)) / coarse.size
        noise_var = 0.75 * sigma ** 2 / 4 ** k  # white noise: 3/4 of its variance is in each detail band
        out[k] = max(detail_power - noise_var, 0.0)
        x = coarse
    return out


def _derivatives(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|gradient| and |Laplacian| after a 1 px Gaussian (shot noise would otherwise dominate a
    defocused field's Laplacian); the 3 px border is dropped."""
    from scipy import ndimage as ndi

    sm = ndi.gaussian_filter(tile, 1.0, truncate=3.0)
    c = sm[1:-1, 1:-1]
    gy = 0.5 * (sm[2:, 1:-1] - sm[:-2, 1:-1])
    gx = 0.5 * (sm[1:-1, 2:] - sm[1:-1, :-2])
    lap = sm[2:, 1:-1] + sm[:-2, 1:-1] + sm[1:-1, 2:] + sm[1:-1, :-2] - 4 * c
    return np.hypot(gy, gx)[2:-2, 2:-2], np.abs(lap)[2:-2, 2:-2]


_NOISE_P99: tuple[float, float] | None = None


def _noise_percentiles() -> tuple[float, float]:
    """99th percentiles of :func:`_derivatives` on unit white noise (computed once, fixed seed)."""
    global _NOISE_P99
    if _NOISE_P99 is None:
        g, lap = _derivatives(np.random.default_rng(0).normal(0, 1, (256, 256)).astype(np.float32))
        _NOISE_P99 = (float(np.percentile(g, 99)), float(np.percentile(lap, 99)))
    return _NOISE_P99


def plane_statistics(plane: np.ndarray) -> dict[str, float]:
    """Exposure-invariant quality measures of one 2-D plane (see the module docstring).

    Parameters
    ----------
    plane : (Y, X) ndarray
        Raw intensities (any numeric dtype).

    Returns
    -------
    dict
        ``level`` (median), ``p01``/``p999`` (0.1st / 99.9th percentiles), ``noise``, ``signal``,
        ``snr``, ``sharpness`` (1/px, nan when blank), ``saturated`` (fraction), ``maximum``,
        ``asymmetry``, ``coverage``, ``band1`` .. ``band16`` (fractions summing to 1, nan when blank).

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[:256, :256]
    >>> spot = 100 + 1000.0 * (((yy - 128) ** 2 + (xx - 128) ** 2) < 15 ** 2)
    >>> s = plane_statistics(spot + np.random.default_rng(0).normal(0, 5, spot.shape))
    >>> s["snr"] > 100, round(s["level"])
    (True, 100)
    """
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"expected a (Y, X) plane, got shape {plane.shape}")
    integer = plane.dtype.kind in "uib"
    ny, nx = plane.shape
    stride = max(1, math.ceil(math.sqrt(ny * nx / _SAMPLE)))
    sample = plane[::stride, ::stride].astype(np.float32)
    p1, p01, p50, p99, p999 = (float(v) for v in np.percentile(sample, [1, 0.1, 50, 99, 99.9]))
    maximum = float(plane.max())
    saturated = float(np.count_nonzero(plane == maximum)) / plane.size if plane.size else 0.0

    # local contrast on tiles of the strided sample (same per-pixel noise as full resolution)
    side = min(_TILE, *sample.shape)
    st = _tiles(sample, side).reshape(-1, side * side)
    q = np.percentile(st, [50, 99.5], axis=1)
    contrast = q[1] - q[0]
    signal = float(contrast.max()) if contrast.size else 0.0

    # full-resolution tiles: a regular grid for noise and texture, the most contrasted ones for sharpness
    g = min(_GRID_TILE, ny, nx)
    gy, gx = ny // g, nx // g
    cells = [(i, j) for i in range(gy) for j in range(gx)]
    pick = np.linspace(0, len(cells) - 1, min(_MAX_GRID, len(cells))).round().astype(int)
    grid = np.stack([plane[i * g:(i + 1) * g, j * g:(j + 1) * g] for i, j in (cells[k] for k in pick)])
    sigma = _noise_sigma(grid, integer)
    snr = signal / sigma if sigma > 0 else (math.inf if signal > 0 else 0.0)

    stats: dict[str, float] = {"level": p50, "p01": p01, "p999": p999, "noise": sigma, "signal": signal,
                               "snr": float(snr), "saturated": saturated, "maximum": maximum}
    blank = not (snr >= BLANK_SNR)
    if blank:
        stats.update({"sharpness": math.nan, "asymmetry": math.nan, "coverage": math.nan,
                      **{f"band{b}": math.nan for b in _BANDS}})
        return stats

    # sharpness in the tiles with the most contrast, mapped back to full resolution
    tiles_x = max(sample.shape[1] // side, 1)
    order = np.argsort(contrast)[::-1][:_MAX_TOP]
    full = side * stride
    grads, laps = [], []
    for k in order:
        i, j = divmod(int(k), tiles_x)
        # a window of at most 128 px centred on the tile's brightest sample pixel (an object's edge is near)
        m = int(np.argmax(st[k]))
        cy, cx = (i * side + m // side) * stride, (j * side + m % side) * stride
        half = min(full, 128) // 2
        y0, x0 = max(min(cy - half, ny - 2 * half), 0), max(min(cx - half, nx - 2 * half), 0)
        t = plane[y0:y0 + 2 * half, x0:x0 + 2 * half].astype(np.float32)
        if t.shape[0] < 7 or t.shape[1] < 7:
            continue
        g, lap = _derivatives(t)
        grads.append(g.ravel())
        laps.append(lap.ravel())
    if not grads:
        stats["sharpness"] = math.nan
        grads, laps = [np.zeros(1)], [np.zeros(1)]
    g99, l99 = (float(np.percentile(np.concatenate(v), 99)) for v in (grads, laps))
    # remove the noise's own share in quadrature (99th percentiles of the same operators on unit white noise)
    local = sigma
    g_noise, l_noise = _noise_percentiles()
    g99 = math.sqrt(max(g99 ** 2 - (g_noise * local) ** 2, 0.0))
    l99 = math.sqrt(max(l99 ** 2 - (l_noise * local) ** 2, 0.0))
    # a step edge blurred by a Gaussian of sigma s px (s includes the 1 px pre-smoothing):
    # max |Laplacian| / max |gradient| = 1 / (s sqrt(e))
    stats["sharpness"] = l99 / g99 if g99 > 0 else math.nan

    spread = p99 - p1
    stats["asymmetry"] = (p99 - p50) / spread if spread > 0 else math.nan
    stats["coverage"] = float(np.mean(sample > p50 + 0.5 * (p999 - p50))) if p999 > p50 else 0.0
    energies = _band_energies(grid, sigma)
    total = float(energies.sum())
    for b, e in zip(_BANDS, energies):
        stats[f"band{b}"] = float(e) / total if total > 0 else math.nan
    return stats


def image_statistics(stack: np.ndarray) -> list[dict[str, float]]:
    """:func:`plane_statistics` of each channel of a raw ``(C, Y, X)`` (or ``(Y, X)``) stack.

    Examples
    --------
    >>> import numpy as np
    >>> len(image_statistics(np.zeros((3, 64, 64), np.uint16)))
    3
    """
    return [plane_statistics(p) for p in _as_stack(stack)]


# ------------------------------------------------------------------------------------------- reference

def _summary(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "median": math.nan, "spread": math.nan, "low": math.nan, "high": math.nan}
    median = float(np.median(v))
    # a robust range: 2nd..98th percentile with >= 50 images, the extremes otherwise
    low, high = (float(np.percentile(v, 2)), float(np.percentile(v, 98))) if v.size >= 50 else (float(v.min()), float(v.max()))
    return {"n": int(v.size), "median": median, "spread": 1.4826 * float(np.median(np.abs(v - median))),
            "low": low, "high": high}


def _areas(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(labels.ravel().astype(np.int64))[1:]
    return counts[counts > 0]


def object_statistics(labels: np.ndarray) -> dict[str, float]:
    """Object count, density (objects per megapixel) and median area (px) of one label image.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((100, 100), np.int32); lab[:10, :10] = 1; lab[50:60, 50:70] = 2
    >>> object_statistics(lab)["median_area"]
    150.0
    """
    areas = _areas(labels)
    size = max(np.asarray(labels).size, 1)
    return {"count": int(areas.size), "density": 1e6 * areas.size / size,
            "median_area": float(np.median(areas)) if areas.size else math.nan}


def reference_statistics(stacks: Iterable[np.ndarray], labels: Iterable[np.ndarray] | None = None) -> dict[str, Any]:
    """Statistics of the training images, to compare new images with (JSON-serialisable).

    Parameters
    ----------
    stacks : iterable of (C, Y, X) ndarrays
        The raw training inputs (the same channels, in the same order, as at inference).
    labels : iterable of (Y, X) int ndarrays, optional
        Their training labels, for :func:`check_objects`.

    Returns
    -------
    dict
        ``version`` (1), ``n_images``; ``channels``: one dict per channel mapping each measure of
        :func:`plane_statistics` (``snr``, ``signal``, ``sharpness``, ``saturated``, ``asymmetry``,
        ``coverage``, ``band1`` .. ``band16``, ``level``, ``noise``, ...) to a summary
        ``{"n", "median", "spread" (1.4826 x MAD), "low", "high"}`` where low..high is the range
        (2nd..98th percentile with >= 50 images, min..max otherwise); with labels, ``objects``:
        the same summaries for ``count``, ``density`` (objects per megapixel) and ``median_area``
        (per image), plus ``area`` (all objects pooled: median, p5, p95).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:128, :128]
    >>> img = 100 + 800.0 * (((yy - 64) ** 2 + (xx - 64) ** 2) < 12 ** 2) + rng.normal(0, 4, (128, 128))
    >>> ref = reference_statistics([img[None]])
    >>> ref["n_images"], sorted(ref["channels"][0])[:3]
    (1, ['asymmetry', 'band1', 'band16'])
    """
    per_image: list[list[dict[str, float]]] = [image_statistics(s) for s in stacks]
    if not per_image:
        raise ValueError("reference_statistics needs at least one training image")
    n_channels = len(per_image[0])
    if any(len(p) != n_channels for p in per_image):
        raise ValueError("training stacks have different numbers of channels")
    channels = []
    for c in range(n_channels):
        keys = per_image[0][c].keys()
        channels.append({k: _summary([p[c][k] for p in per_image]) for k in keys})
    ref: dict[str, Any] = {"version": 1, "n_images": len(per_image), "channels": channels}
    if labels is not None:
        objs, pooled = [], []
        for lab in labels:
            objs.append(object_statistics(lab))
            pooled.append(_areas(lab))
        areas = np.concatenate(pooled) if pooled else np.zeros(0)
        ref["objects"] = {k: _summary([o[k] for o in objs]) for k in ("count", "density", "median_area")}
        ref["objects"]["area"] = ({"median": float(np.median(areas)), "p5": float(np.percentile(areas, 5)),
                                   "p95": float(np.percentile(areas, 95))} if areas.size else
                                  {"median": math.nan, "p5": math.nan, "p95": math.nan})
    return _jsonable(ref)


def _jsonable(obj: Any) -> Any:
    """Plain Python types; nan/inf become None so the dict is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, int)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj
