"""Whole cells from a cytoplasm stain, seeded by the nuclei (METHOD.md 1.4).

The cytoplasm image is enhanced by grayscale dilation with a small disk (paper: diameter 5 px),
thresholded (Otsu) into a foreground, and flooded by a seeded watershed from the nuclei inside that
foreground united with the nuclei. Every cell carries the label of the one nucleus it holds; no
cell exists without a nucleus, and foreground unreachable from any nucleus stays background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology, segmentation

from stainseg.errors import StainsegError
from stainseg.groundtruth.nuclei import fill_holes, foreground_threshold, project_z


def dilation_footprint(diameter: int) -> np.ndarray:
    """Disk footprint of the given diameter in pixels (odd diameters are exact: 5 -> 5 x 5 disk)."""
    if diameter < 1:
        raise StainsegError(f"cytoplasm dilation diameter must be at least 1 px, got {diameter}; set groundtruth.cytoplasm_dilation")
    return morphology.disk(max(0, (int(diameter) - 1) // 2)).astype(bool)


def enhance_cytoplasm(cytoplasm: np.ndarray, dilation_diameter: int = 5) -> np.ndarray:
    """Grayscale dilation of the cytoplasm stain (mean-projected if a stack) with a disk."""
    plane = project_z(cytoplasm)
    return ndi.grey_dilation(plane, footprint=dilation_footprint(dilation_diameter)).astype(np.float32, copy=False)


def segment_cells(cytoplasm: np.ndarray, nuclei_labels: np.ndarray, dilation_diameter: int = 5,
                  log_threshold: bool = True) -> np.ndarray:
    """Segment cells by seeded watershed on the enhanced cytoplasm stain from the nuclei.

    Parameters
    ----------
    cytoplasm : (Y, X) or (Z, Y, X) ndarray
        Cytoplasm / cell-body stain (illumination-corrected); a stack is mean-projected.
    nuclei_labels : (Y, X) ndarray of int
        Nuclei instance labels (0 = background), e.g. from :func:`segment_nuclei`.
    dilation_diameter : int
        Diameter of the disk for the grayscale dilation (paper: 5).
    log_threshold : bool
        Otsu on log intensities (default; a linear Otsu is pulled up by the few bright, rounded
        mitotic cells and keeps little more than the nuclei on CellProfiler's ExampleHuman) or linear.

    Returns
    -------
    labels : (Y, X) ndarray of int32
        Cells; cell ``k`` contains all of nucleus ``k`` and no other nucleus.
    """
    nuclei_labels = np.asarray(nuclei_labels)
    enhanced = enhance_cytoplasm(cytoplasm, dilation_diameter)
    if nuclei_labels.shape != enhanced.shape:
        raise StainsegError(f"nuclei labels have shape {nuclei_labels.shape} but the cytoplasm stain has "
                            f"{enhanced.shape}; both must come from the same field")
    if not np.issubdtype(nuclei_labels.dtype, np.integer) or (nuclei_labels.size and nuclei_labels.min() < 0):
        raise StainsegError("nuclei labels must be a non-negative integer instance image")
    markers = nuclei_labels.astype(np.int32)
    if not markers.any():
        return np.zeros(markers.shape, np.int32)
    threshold = foreground_threshold(enhanced, log_threshold)
    foreground = (enhanced > threshold) | (markers > 0)
    foreground = fill_holes(foreground)
    # flood from the nuclei towards darker pixels: cells meet along the dim lines between them
    return segmentation.watershed(-enhanced, markers, mask=foreground).astype(np.int32, copy=False)
