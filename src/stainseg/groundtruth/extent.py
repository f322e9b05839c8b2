"""Whole cells from a nuclear stain alone: cell extent from the label-free image (issue 16).

When an experiment stains only the nuclei, the cell bodies must come from the label-free input
(phase contrast, bright-field; one plane or a z-stack). Cells are textured, the empty dish is flat:

1. **Texture map.** Each (illumination-corrected) plane is smoothed by a Gaussian of
   :data:`SMOOTHING` px (shot noise) and its local standard deviation is taken in a Gaussian window
   of :data:`TEXTURE_SIGMA` px, divided by the plane's median (so planes of a z-stack weigh alike
   and the threshold does not depend on the exposure); the planes' maps are averaged.
   Phase halos are bright rims, i.e. strong local contrast: they count as texture, which keeps the
   rims inside the foreground instead of splitting a cell from its own halo.
2. **Foreground.** Otsu threshold of the *log* texture (the flat background is a narrow peak, cells a
   wide tail; on linear values Otsu splits inside the cells' tail: 21 % F >= 0.6 on HeLa),
   components smaller than half a typical nucleus dropped, holes filled, united with the nuclei.
3. **Cells.** Seeded watershed of the distance to the nearest nucleus, limited to the foreground:
   each foreground pixel goes to the nucleus it is nearest to through the foreground. Every cell
   holds exactly one nucleus (its label is the nucleus' label), no cell leaves the foreground except
   by its own nucleus, and a nucleus on no foreground keeps at least itself.

The texture scale is the optics' (a few pixels: halos, granules, edges), not the nucleus': tying it
to the nucleus diameter (d / 16) lost BMDM cells (small nuclei, thin cells: 56 % vs 90 % F >= 0.6).

Measured on the manual whole-cell masks of Van Valen et al. 2016 (``benchmarks/cells_from_nuclei.py``;
choice made on HeLa s2-s5, the others held out; automatic nuclei from the nuclear stain):

========================================================  ===================  ==========
variant (HeLa s2-s5 mean)                                 % F >= 0.6           F1 @ .5
========================================================  ===================  ==========
linear Otsu of the texture (window d / 16)                 20.6                 0.125
log-Otsu, window d / 16, distance watershed                81.3                 0.765
log-Otsu, window d / 16, watershed on phase intensity      20.3                 0.119
log-Otsu, window d / 16, watershed on the texture          48.0                 0.380
background peak + 3 robust sigma (instead of Otsu)         80.5                 (not kept)
log-Otsu, 2 px window, distance watershed  (default)       81.2                 0.762
manual foreground, distance watershed (upper bound)        91.3                 0.905
========================================================  ===================  ==========

(d = nucleus diameter. Held out, the default scores HeLa s6 88.2 %, HeLa s7 30.4 % (a third of its
cells have no detected nucleus: dim stain), 3T3 s1 30.5 % (thin, sprawling cells; fragmentary
masks), BMDM s1 90.1 %, MCF10A s2 77.1 %.) Eroding the foreground (halo removal) by 2-6 px, an opening, or cutting bright pixels from the
foreground's outer band changed the HeLa figures by <= 0.3 points up or lost up to 3 points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, segmentation

from stainseg.config import GroundTruthConfig
from stainseg.errors import StainsegError
from stainseg.groundtruth.nuclei import fill_holes
from stainseg.io.images import as_float

#: Gaussian pre-smoothing (px) of each label-free plane before its local contrast is taken.
SMOOTHING = 1.0
#: Gaussian window (px) of the local standard deviation.
TEXTURE_SIGMA = 2.0
#: Foreground pieces smaller than this fraction of the field's median nucleus area are dropped.
MIN_AREA_FRACTION = 0.5
#: The one method of :class:`CellExtent` (``model.json`` ``cell_extent.method``).
EXTENT_METHOD = "nuclei+texture"


def _planes(label_free: np.ndarray) -> np.ndarray:
    data = as_float(np.asarray(label_free))
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise StainsegError(f"label-free input must be (Y, X) or (C, Y, X), got shape {data.shape}")
    if min(data.shape[-2:]) < 2:
        raise StainsegError(f"label-free input is only {data.shape[-2]} x {data.shape[-1]} pixels")
    return data


def texture_map(label_free: np.ndarray, sigma: float = TEXTURE_SIGMA, smoothing: float = SMOOTHING) -> np.ndarray:
    """Local contrast of label-free plane(s): Gaussian-windowed standard deviation over the median.

    Parameters
    ----------
    label_free : (Y, X) or (C, Y, X) ndarray
        Illumination-corrected phase-contrast / bright-field plane(s) (e.g. the focal planes of a z-stack).
    sigma : float
        Gaussian window of the local standard deviation, in pixels.
    smoothing : float
        Gaussian pre-smoothing in pixels (0: none).

    Returns
    -------
    (Y, X) ndarray of float32
        Mean over the planes of local std / plane median (plane mean absolute value when the median is 0).

    Examples
    --------
    >>> import numpy as np
    >>> plane = np.full((64, 64), 100.0)
    >>> plane[20:40, 20:40] += np.random.default_rng(0).normal(0, 20, (20, 20))
    >>> t = texture_map(plane)
    >>> bool(t[30, 30] > 10 * t[5, 5])
    True
    """
    planes = _planes(label_free)
    total = np.zeros(planes.shape[-2:], np.float64)
    for plane in planes:
        p = ndi.gaussian_filter(plane, smoothing) if smoothing > 0 else plane
        p = p.astype(np.float64)
        mean = ndi.gaussian_filter(p, sigma)
        sq = ndi.gaussian_filter(p * p, sigma)
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        scale = abs(float(np.median(p))) or float(np.mean(np.abs(p)))
        total += std / scale if scale > 0 else std
    return (total / len(planes)).astype(np.float32)


def texture_threshold(texture: np.ndarray) -> float:
    """Otsu threshold of the log of a texture map (in the map's own units); ``inf`` when flat.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.r_[np.full(100, 0.01), np.full(50, 0.2)]
    >>> 0.01 < texture_threshold(t) < 0.2
    True
    """
    texture = np.asarray(texture, np.float64)
    positive = texture[texture > 0]
    if positive.size == 0 or positive.min() == positive.max():
        return float("inf")
    floor = 1e-3 * float(np.percentile(positive, 99.9))
    logged = np.log(np.maximum(texture, max(floor, float(positive.min()))))
    if logged.min() == logged.max():
        return float("inf")
    return float(np.exp(filters.threshold_otsu(logged)))


def texture_foreground(label_free: np.ndarray, min_area: int = 0, sigma: float = TEXTURE_SIGMA,
                       smoothing: float = SMOOTHING) -> np.ndarray:
    """Cell-covered pixels of label-free plane(s): log-Otsu of the texture map, small specks dropped, holes filled.

    Parameters
    ----------
    label_free : (Y, X) or (C, Y, X) ndarray
        Illumination-corrected label-free plane(s).
    min_area : int
        Connected foreground pieces smaller than this many pixels are dropped (before hole filling).
    sigma, smoothing : float
        As in :func:`texture_map`.

    Returns
    -------
    (Y, X) ndarray of bool

    Examples
    --------
    >>> import numpy as np
    >>> plane = np.full((64, 64), 100.0) + np.random.default_rng(0).normal(0, 1, (64, 64))
    >>> plane[20:40, 20:40] += np.random.default_rng(1).normal(0, 20, (20, 20))
    >>> fg = texture_foreground(plane, min_area=20)
    >>> bool(fg[30, 30]), bool(fg[5, 5])
    (True, False)
    """
    texture = texture_map(label_free, sigma, smoothing)
    foreground = texture > texture_threshold(texture)
    if min_area > 0 and foreground.any():
        pieces, n = ndi.label(foreground)
        areas = np.bincount(pieces.ravel(), minlength=n + 1)
        small = areas < min_area
        small[0] = False
        foreground[small[pieces]] = False
    return fill_holes(foreground)


def typical_nucleus_area(nuclei_labels: np.ndarray) -> float:
    """Median area (px) of the nuclei; 0 when there are none."""
    areas = np.bincount(np.asarray(nuclei_labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) if areas.size else 0.0


def cells_from_nuclei(label_free: np.ndarray, nuclei_labels: np.ndarray, sigma: float = TEXTURE_SIGMA,
                      smoothing: float = SMOOTHING, foreground: np.ndarray | None = None,
                      min_area_fraction: float = MIN_AREA_FRACTION) -> np.ndarray:
    """Whole cells from nuclei labels and label-free plane(s), without a cytoplasm stain.

    Parameters
    ----------
    label_free : (Y, X) or (C, Y, X) ndarray
        Illumination-corrected phase-contrast / bright-field plane(s) of the same field.
    nuclei_labels : (Y, X) ndarray of int
        Nuclei instance labels (0 = background), e.g. from :func:`~stainseg.groundtruth.nuclei.segment_nuclei`.
    sigma, smoothing : float
        Texture window and pre-smoothing in pixels (:func:`texture_map`).
    foreground : (Y, X) ndarray of bool, optional
        Use this foreground instead of :func:`texture_foreground` (e.g. to compare with a manual one).
    min_area_fraction : float
        Texture foreground pieces smaller than this fraction of the median nucleus area of the field are dropped.

    Returns
    -------
    labels : (Y, X) ndarray of int32
        Cell ``k`` holds all of nucleus ``k`` and no other nucleus; cell pixels outside the
        foreground belong to the cell's own nucleus only.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> phase = 100 + rng.normal(0, 1, (80, 120))
    >>> phase[10:70, 10:110] += rng.normal(0, 25, (60, 100))  # one textured patch, two cells
    >>> nuclei = np.zeros((80, 120), np.int32)
    >>> nuclei[35:45, 25:35] = 1
    >>> nuclei[35:45, 85:95] = 2
    >>> cells = cells_from_nuclei(phase, nuclei)
    >>> int(cells[40, 20]), int(cells[40, 100]), int(cells[2, 2])
    (1, 2, 0)
    """
    nuclei_labels = np.asarray(nuclei_labels)
    shape = _planes(label_free).shape[-2:]
    if nuclei_labels.shape != shape:
        raise StainsegError(f"nuclei labels have shape {nuclei_labels.shape} but the label-free input has {shape}; "
                            "both must come from the same field")
    if not np.issubdtype(nuclei_labels.dtype, np.integer) or (nuclei_labels.size and nuclei_labels.min() < 0):
        raise StainsegError("nuclei labels must be a non-negative integer instance image")
    markers = nuclei_labels.astype(np.int32)
    if not markers.any():
        return np.zeros(shape, np.int32)
    if foreground is None:
        foreground = texture_foreground(label_free, int(round(typical_nucleus_area(markers) * min_area_fraction)), sigma, smoothing)
    elif np.shape(foreground) != shape:
        raise StainsegError(f"foreground has shape {np.shape(foreground)} but the label-free input has {shape}")
    mask = np.asarray(foreground, bool) | (markers > 0)
    distance = ndi.distance_transform_edt(markers == 0).astype(np.float32)
    cells = segmentation.watershed(distance, markers, mask=mask).astype(np.int32, copy=False)
    # a nucleus the watershed could not fully keep (it never does, but cheap to guarantee) stays itself
    cells[markers > 0] = markers[markers > 0]
    return cells


@dataclass
class CellExtent:
    """The recipe that grows nuclei into whole cells over label-free planes, with its own illumination correction.

    One object makes the automatic cell labels (:func:`stainseg.groundtruth.pipeline.groundtruth_for_set`,
    with nuclei from the stain) and, stored in ``model.json`` ``cell_extent``, the cells of a model
    that segments nuclei (``cell_method = "nuclei"``): the same correction and the same parameters,
    so labels and segmentation cannot differ in how a nucleus becomes a cell.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> phase = 100 + rng.normal(0, 1, (80, 120))
    >>> phase[10:70, 10:110] += rng.normal(0, 25, (60, 100))
    >>> nuclei = np.zeros((80, 120), np.int32)
    >>> nuclei[35:45, 25:35], nuclei[35:45, 85:95] = 1, 2
    >>> extent = CellExtent(illumination="none")
    >>> cells = extent.cells(phase, nuclei)
    >>> int(cells[40, 20]), int(cells[40, 100]), int(cells[2, 2])
    (1, 2, 0)
    >>> CellExtent.from_dict(extent.to_dict()) == extent
    True
    """

    method: str = EXTENT_METHOD
    """``"nuclei+texture"``: seeded watershed of the distance to the nuclei inside the texture foreground."""
    illumination: Literal["spline", "none"] = "spline"
    """Each label-free plane divided by its own iterative spline background fit first, or used as it is."""
    spline_grid: int = 5
    spline_iterations: int = 5
    sigma: float = TEXTURE_SIGMA
    """Gaussian window (px) of the local standard deviation (:func:`texture_map`)."""
    smoothing: float = SMOOTHING
    """Gaussian pre-smoothing (px) of each plane (:func:`texture_map`)."""
    min_area_fraction: float = MIN_AREA_FRACTION
    """Foreground pieces below this fraction of the field's median nucleus area are dropped."""

    @classmethod
    def for_groundtruth(cls, cfg: GroundTruthConfig | None = None) -> "CellExtent":
        """The recipe of the automatic cell labels of ``[groundtruth]`` (spline correction unless illumination is ``"none"``;
        plate functions exist only for the stains, so ``"plate"`` fits each label-free plane too).

        Examples
        --------
        >>> CellExtent.for_groundtruth(GroundTruthConfig(illumination="plate")).illumination
        'spline'
        """
        cfg = cfg or GroundTruthConfig()
        return cls(illumination="none" if cfg.illumination == "none" else "spline", spline_grid=int(cfg.spline_grid),
                   spline_iterations=int(cfg.spline_iterations))

    def correct(self, label_free: np.ndarray) -> np.ndarray:
        """The label-free planes as (C, Y, X) float32, each corrected by its own spline background fit (unless ``"none"``).

        Examples
        --------
        >>> CellExtent().correct(np.full((40, 50), 7.0)).shape
        (1, 40, 50)
        """
        planes = _planes(label_free)
        if self.illumination == "none":
            return planes
        from stainseg.groundtruth.illumination import correct_illumination

        return correct_illumination(planes, self.spline_grid, self.spline_iterations)[0]

    def grow(self, planes: np.ndarray, nuclei_labels: np.ndarray) -> np.ndarray:
        """Cells from already corrected planes (:meth:`correct`) and nuclei labels (:func:`cells_from_nuclei`)."""
        return cells_from_nuclei(planes, nuclei_labels, self.sigma, self.smoothing, min_area_fraction=self.min_area_fraction)

    def cells(self, label_free: np.ndarray, nuclei_labels: np.ndarray) -> np.ndarray:
        """Cells from raw label-free planes and nuclei labels: :meth:`correct`, then :meth:`grow`."""
        return self.grow(self.correct(label_free), nuclei_labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``model.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Any = None) -> "CellExtent":
        """Inverse of :meth:`to_dict`; an unknown method or key is a one-line :class:`StainsegError` naming ``where``."""
        if not isinstance(data, dict):
            raise StainsegError(f"cell_extent must be a table of settings, got {data!r}", where)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown or data.get("method", EXTENT_METHOD) != EXTENT_METHOD:
            what = f"setting {unknown[0]!r}" if unknown else f"method {data.get('method')!r}"
            raise StainsegError(f"cell_extent has an unknown {what} (written by a newer stainseg?); upgrade stainseg or retrain", where)
        return cls(**data)
