"""Per-image quality checks: say in words why an image (or a segmentation) is unlike the training data.

Real plates hold empty wells, out-of-focus fields, bubbles and debris, saturated spots, other exposures
and other days. A network applied to them still returns labels; these checks say when not to trust them.

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

:func:`reference_statistics` summarises these over the training images (and, with labels, the object
counts and areas); :func:`check_image` and :func:`check_objects` compare a new image or segmentation
with it and return :class:`Flag` s. Label QC (:mod:`stainseg.groundtruth.qc`) uses the same codes.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noise = rng.poisson(150, (1, 256, 256)).astype(np.uint16)  # a camera frame with nothing in it
>>> is_blank(noise)
True
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

#: Flag code -> one-line meaning (the vocabulary shared by segmentation and label QC).
FLAG_MEANINGS: dict[str, str] = {
    "blank": "no signal above the camera noise (empty well, noise-only or constant frame)",
    "low_signal": "signal above the noise, but far weaker (relative to the noise) than in the training images",
    "saturated": "many pixels clipped at the maximum value (over-exposure): intensities there are lost",
    "out_of_focus": "edges far blurrier than in the training images (defocus), relative to the contrast",
    "unlike_training": "texture or intensity distribution unlike the training images (other stain, modality or cell type)",
    "dim": "contrast far below the training exposure (informative: the checks are exposure-invariant)",
    "bright": "contrast far above the training exposure (informative: the checks are exposure-invariant)",
    "too_many_objects": "far more objects per area than in the training labels (noise or debris segmented)",
    "too_few_objects": "far fewer objects per area than in the training labels (or none)",
    "object_size": "object areas unlike the training labels (other magnification, split or merged objects)",
}

#: Codes that describe the image but are not a reason to distrust the result.
INFORMATIVE: frozenset[str] = frozenset({"dim", "bright"})

#: Below this signal-to-noise (largest local contrast / noise sigma) a channel is blank; noise alone gives ~3.
BLANK_SNR = 6.0
#: A channel whose saturated fraction exceeds this (and 10x the training's) is flagged ``saturated``.
SATURATED_FRACTION = 0.002
#: ``out_of_focus`` when the sharpness is this factor below the lowest training value.
FOCUS_FACTOR = 1.6
#: ``dim`` / ``bright`` when the signal is this factor outside the training range.
EXPOSURE_FACTOR = 4.0
#: ``unlike_training`` when a texture measure is more than this many robust standard deviations from
#: the training median (spreads are floored, see :data:`TEXTURE_FLOOR`).
TEXTURE_Z = 6.0
#: Smallest robust spread of each texture measure, so one training image (MAD 0) still has a range:
#: ``asymmetry`` is compared linearly, the band shares as natural logarithms (0.1 = 10 %). With n
#: training images the floors are multiplied by ``1 + 4 / n`` (x5 for one image, x2 for four): a
#: spread measured on a few images is not trusted.
TEXTURE_FLOOR: dict[str, float] = {"asymmetry": 0.01, "band1": 0.1, "band2": 0.1, "band4": 0.1,
                                   "band8": 0.1, "band16": 0.1}
#: ``too_many_objects`` / ``too_few_objects`` / ``object_size`` when outside the training range by this factor.
OBJECT_FACTOR = 3.0
#: ``low_signal`` when the signal-to-noise is this factor below the lowest training value.
SNR_FACTOR = 10.0

_TILE = 64           # tile side (on the strided sample) for local contrast
_GRID_TILE = 128     # full-resolution tiles for noise and texture
_MAX_GRID = 16       # at most this many grid tiles per channel
_MAX_TOP = 8         # tiles with the most contrast, for sharpness
_SAMPLE = 1 << 18    # pixels in the strided sample used for percentiles
_BANDS = (1, 2, 4, 8, 16)
_TEXTURE = ("asymmetry", *(f"band{b}" for b in _BANDS))


class Flag(NamedTuple):
    """One quality finding.

    Attributes
    ----------
    code : str
        A key of :data:`FLAG_MEANINGS`.
    reason : str
        One line, starting with the code, with the measured number and the training range.

    Example
    -------
    >>> Flag("saturated", "saturated: 12.3 % of pixels at the maximum (training: 0.1 %)").informative
    False
    """

    code: str
    reason: str

    @property
    def informative(self) -> bool:
        """True for codes that describe the image without casting doubt on the result (``dim``, ``bright``)."""
        return self.code in INFORMATIVE

    def __str__(self) -> str:
        return self.reason


# --------------------------------------------------------------------------------------------- measures

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


def _noise_sigma(tiles: np.ndarray, integer: bool) -> float:
    """Robust noise sigma from the MAD of second differences along both axes."""
    t = tiles.astype(np.float32, copy=False)
    dx = (t[:, :, :-2] - 2 * t[:, :, 1:-1] + t[:, :, 2:]).ravel()
    dy = (t[:, :-2, :] - 2 * t[:, 1:-1, :] + t[:, 2:, :]).ravel()
    d = np.concatenate([dx, dy])
    sigma = 1.4826 * float(np.median(np.abs(d))) / math.sqrt(6.0) if d.size else 0.0
    if integer:  # quantisation: a rounded value carries at least 1/sqrt(12) counts of noise
        sigma = max(sigma, 1.0 / math.sqrt(12.0))
    return sigma


def _band_energies(tiles: np.ndarray, sigma: float) -> np.ndarray:
    """Noise-corrected variance of a Laplacian pyramid (block means) at scales 1, 2, 4, 8, 16 px."""
    x = tiles.astype(np.float32, copy=False)
    out = np.zeros(len(_BANDS))
    for k in range(len(_BANDS)):
        n, h, w = x.shape
        if h < 2 or w < 2:
            break
        h2, w2 = h // 2 * 2, w // 2 * 2
        x = x[:, :h2, :w2]
        coarse = x.reshape(n, h2 // 2, 2, w2 // 2, 2).mean(axis=(2, 4))
        detail = x - np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)
        noise_var = 0.75 * sigma ** 2 / 4 ** k  # white noise: 3/4 of its variance is in each detail band
        out[k] = max(float(np.mean(detail.astype(np.float64) ** 2)) - noise_var, 0.0)
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

    Example
    -------
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

    Example
    -------
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

    Example
    -------
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

    Example
    -------
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


# ---------------------------------------------------------------------------------------------- checks

def _num(summary: Mapping[str, Any], key: str) -> float:
    v = summary.get(key) if summary else None
    return float(v) if v is not None else math.nan


def _g(v: float) -> str:
    return f"{v:.3g}"


def _pct(v: float) -> str:
    return f"{100 * v:.3g} %"


def is_blank(stack: np.ndarray, reference: Mapping[str, Any] | None = None) -> bool:
    """True when every channel of the stack is blank: no local contrast above the camera noise.

    Catches noise-only frames (an empty well, a shutter that did not open), not only constant ones.
    ``reference`` is accepted for symmetry with :func:`check_image`; the rule is absolute
    (signal-to-noise below :data:`BLANK_SNR`), so a dim but real field is not blank.

    Example
    -------
    >>> import numpy as np
    >>> is_blank(np.full((2, 64, 64), 7, np.uint16))
    True
    """
    del reference
    return all(not (s["snr"] >= BLANK_SNR) for s in image_statistics(stack))


def check_image(stack: np.ndarray, reference: Mapping[str, Any],
                stats: Sequence[Mapping[str, float]] | None = None) -> list[Flag]:
    """Quality flags of one raw ``(C, Y, X)`` stack against the training :func:`reference_statistics`.

    Rules (per channel; the reason names the channel when there are several):

    * ``blank``: signal-to-noise below :data:`BLANK_SNR` (the other checks are skipped for it);
    * ``low_signal``: signal-to-noise :data:`SNR_FACTOR` x below the training range;
    * ``saturated``: more than :data:`SATURATED_FRACTION` and 10x the training's highest fraction
      of the pixels at the maximum;
    * ``out_of_focus``: sharpness :data:`FOCUS_FACTOR` x below the training range;
    * ``unlike_training``: a texture measure more than :data:`TEXTURE_Z` robust standard deviations
      (floored at :data:`TEXTURE_FLOOR`) from the training median; not raised when the channel is
      already ``saturated`` or ``out_of_focus`` (clipping and blur change the texture too);
    * ``dim`` / ``bright`` (informative): signal :data:`EXPOSURE_FACTOR` x outside the training range.

    The training range is min..max (2nd..98th percentile with >= 50 images); with one training image
    it is that image's value, and the factors alone set the tolerance.

    Parameters
    ----------
    stack : (C, Y, X) or (Y, X) ndarray
    reference : dict
        From :func:`reference_statistics` (or read back from JSON).
    stats : list of dict, optional
        :func:`image_statistics` of the stack when already computed.

    Returns
    -------
    list of Flag
        Empty when nothing is unusual.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:128, :128]
    >>> img = 100 + 800.0 * (((yy - 64) ** 2 + (xx - 64) ** 2) < 12 ** 2) + rng.normal(0, 4, (128, 128))
    >>> ref = reference_statistics([img[None]])
    >>> check_image(img[None], ref)
    []
    >>> [f.code for f in check_image(np.clip(img * 20, 0, 4095)[None], ref)]
    ['saturated']
    """
    stats = list(stats) if stats is not None else image_statistics(stack)
    channels = reference.get("channels") or []
    flags: list[Flag] = []
    for c, s in enumerate(stats):
        ref = channels[c] if c < len(channels) else {}
        where = f" in channel {c}" if len(stats) > 1 else ""
        n_before = len(flags)
        snr_low = _num(ref.get("snr", {}), "low")
        # a channel that already had little contrast in training (e.g. the in-focus plane of a bright-field
        # stack) is blank only when it is far below what training showed, not merely below the absolute rule
        blank_limit = min(BLANK_SNR, 0.5 * snr_low) if np.isfinite(snr_low) else BLANK_SNR
        if not (s["snr"] >= blank_limit):
            flags.append(Flag("blank", f"blank: largest local contrast{where} is {_g(s['snr'])} x the noise "
                                       f"(signal {_g(s['signal'])}, noise {_g(s['noise'])} counts; a real field "
                                       f"needs >= {_g(BLANK_SNR)}; training: {_g(_num(ref.get('snr', {}), 'low'))}"
                                       f"..{_g(_num(ref.get('snr', {}), 'high'))})"))
            continue
        if np.isfinite(snr_low) and s["snr"] < snr_low / SNR_FACTOR:
            flags.append(Flag("low_signal", f"low_signal: signal-to-noise{where} {_g(s['snr'])} is more than "
                                            f"{_g(SNR_FACTOR)}x below the training range {_g(snr_low)}.."
                                            f"{_g(_num(ref['snr'], 'high'))}"))
        sat_high = _num(ref.get("saturated", {}), "high")
        sat_limit = max(SATURATED_FRACTION, 10 * sat_high if np.isfinite(sat_high) else 0.0)
        if s["saturated"] > sat_limit:
            train = f"training: up to {_pct(sat_high)}" if np.isfinite(sat_high) else "no training figure"
            flags.append(Flag("saturated", f"saturated: {_pct(s['saturated'])} of pixels{where} at the maximum "
                                           f"{s['maximum']:.6g} ({train})"))
        sharp_low = _num(ref.get("sharpness", {}), "low")
        if np.isfinite(sharp_low) and np.isfinite(s["sharpness"]) and s["sharpness"] < sharp_low / FOCUS_FACTOR:
            flags.append(Flag("out_of_focus", f"out_of_focus: edge sharpness{where} {_g(s['sharpness'])}/px is more "
                                              f"than {_g(FOCUS_FACTOR)}x below the training range {_g(sharp_low)}.."
                                              f"{_g(_num(ref['sharpness'], 'high'))}/px (an edge blurred over about "
                                              f"{_g(1 / (math.sqrt(math.e) * max(s['sharpness'], 1e-9)))} px)"))
        worst: list[tuple[float, str]] = []
        for key in _TEXTURE:
            summ = ref.get(key, {})
            median, value = _num(summ, "median"), float(s[key])
            spread = _num(summ, "spread")
            if key != "asymmetry":  # shares: compare ratios (log), spread of the log from the relative MAD
                if not (median > 0 and value > 0):
                    continue
                distance, spread = math.log(value / median), spread / median
            else:
                distance = value - median
            if not (np.isfinite(distance) and np.isfinite(median)):
                continue
            floor = TEXTURE_FLOOR[key] * (1.0 + 4.0 / max(_num(summ, "n"), 1.0))
            z = abs(distance) / max(spread if np.isfinite(spread) else 0.0, floor)
            if z > TEXTURE_Z:
                worst.append((z, f"{key} {_g(value)} (training median {_g(median)}, range "
                                 f"{_g(_num(summ, 'low'))}..{_g(_num(summ, 'high'))}; {z:.0f} robust SD away)"))
        explained = any(f.code in ("saturated", "out_of_focus") for f in flags[n_before:])
        if worst and not explained:
            worst.sort(reverse=True)
            flags.append(Flag("unlike_training", f"unlike_training{where}: " + "; ".join(t for _, t in worst[:3])))
        sig = ref.get("signal", {})
        lo, hi = _num(sig, "low"), _num(sig, "high")
        if np.isfinite(lo) and s["signal"] < lo / EXPOSURE_FACTOR:
            flags.append(Flag("dim", f"dim: contrast{where} {_g(s['signal'])} counts is {_g(lo / s['signal'])}x below "
                                     f"the training range {_g(lo)}..{_g(hi)}"))
        elif np.isfinite(hi) and s["signal"] > hi * EXPOSURE_FACTOR:
            flags.append(Flag("bright", f"bright: contrast{where} {_g(s['signal'])} counts is {_g(s['signal'] / hi)}x above "
                                        f"the training range {_g(lo)}..{_g(hi)}"))
    return flags


def check_objects(labels: np.ndarray, reference: Mapping[str, Any]) -> list[Flag]:
    """Quality flags of a segmentation result against the training labels' statistics.

    ``too_many_objects`` / ``too_few_objects`` when the density (objects per megapixel, so image sizes
    may differ) is :data:`OBJECT_FACTOR` x outside the training range (none at all is too few when
    every training image had objects); ``object_size`` when the median area is that factor outside
    the range of the training images' median areas. No flags when the reference has no ``objects``.

    Example
    -------
    >>> import numpy as np
    >>> lab = np.zeros((200, 200), np.int32)
    >>> for i in range(4):
    ...     lab[i * 50:i * 50 + 20, 10:30] = i + 1
    >>> ref = reference_statistics([lab[None].astype(float)], [lab])
    >>> [f.code for f in check_objects(np.zeros_like(lab), ref)]
    ['too_few_objects']
    """
    objs = reference.get("objects")
    if not objs:
        return []
    s = object_statistics(labels)
    flags: list[Flag] = []
    dens = objs.get("density", {})
    lo, hi = _num(dens, "low"), _num(dens, "high")
    rng = f"training {_g(lo)}..{_g(hi)}"
    if np.isfinite(hi) and s["density"] > max(hi, 1e-9) * OBJECT_FACTOR:
        flags.append(Flag("too_many_objects", f"too_many_objects: {s['count']} objects, {_g(s['density'])} per megapixel "
                                              f"({rng})"))
    elif np.isfinite(lo) and lo > 0 and (s["count"] == 0 or s["density"] < lo / OBJECT_FACTOR):
        flags.append(Flag("too_few_objects", f"too_few_objects: {s['count']} objects, {_g(s['density'])} per megapixel "
                                             f"({rng})"))
    med = objs.get("median_area", {})
    lo, hi = _num(med, "low"), _num(med, "high")
    if s["count"] and np.isfinite(lo) and np.isfinite(hi) and not (lo / OBJECT_FACTOR <= s["median_area"] <= hi * OBJECT_FACTOR):
        flags.append(Flag("object_size", f"object_size: median object area {_g(s['median_area'])} px (training "
                                         f"{_g(lo)}..{_g(hi)} px)"))
    return flags
