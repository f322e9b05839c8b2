"""The per-cell table of `segment` (cells.csv): label-indexed sums agree with skimage's regionprops."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops_table

from stainseg.stages.segment import cell_table


def _compare(labels: np.ndarray, stack: np.ndarray, uncertainty) -> None:
    rows = cell_table("img", labels, stack, [f"c{i}" for i in range(len(stack))], uncertainty)
    planes = [*stack] + ([uncertainty] if uncertainty is not None else [])
    ref = regionprops_table(labels, intensity_image=np.stack(planes, -1), properties=("label", "area", "centroid", "intensity_mean"))
    assert [r["label"] for r in rows] == ref["label"].tolist()
    assert [r["area"] for r in rows] == ref["area"].tolist()
    np.testing.assert_allclose([r["centroid_y"] for r in rows], ref["centroid-0"], atol=0.006)
    np.testing.assert_allclose([r["centroid_x"] for r in rows], ref["centroid-1"], atol=0.006)
    for c in range(len(stack)):
        np.testing.assert_allclose([r[f"mean_c{c}"] for r in rows], ref[f"intensity_mean-{c}"], rtol=1e-6, atol=6e-4)
    if uncertainty is not None:
        np.testing.assert_allclose([r["uncertainty"] for r in rows], ref[f"intensity_mean-{len(stack)}"], atol=6e-5)
    assert all(r["image"] == "img" for r in rows)


def test_table_matches_regionprops_on_real_nuclei(bbbc039):
    """Manual BBBC039 masks (with gaps in the numbering) and the real image they belong to."""
    import tifffile

    from stainseg.io.images import read_image

    mask_path = sorted((bbbc039 / "masks").iterdir())[0]
    image_path = next(p for p in (bbbc039 / "images").iterdir() if p.stem == mask_path.stem)
    labels = np.asarray(read_image(mask_path))
    if labels.ndim == 3:  # BBBC039 masks are RGB-coded: channel 0 holds the label
        labels = labels[..., 0]
    from skimage.measure import label

    labels = label(labels > 0).astype(np.uint16)
    labels[labels == 3] = 0  # a gap in the numbering
    image = tifffile.imread(image_path).astype(np.float32)[None]
    rng = np.random.default_rng(0)
    _compare(labels, image, rng.random(labels.shape, dtype=np.float32))


@pytest.mark.parametrize("with_uncertainty", [True, False])
def test_table_matches_regionprops_on_touching_cells(with_uncertainty):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    seeds = np.zeros((300, 400), np.int32)
    seeds[rng.integers(0, 300, 80), rng.integers(0, 400, 80)] = np.arange(1, 81)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = np.where(dist < 12, seeds[iy, ix], 0).astype(np.uint16)
    stack = rng.integers(0, 4000, (3, 300, 400)).astype(np.uint16)
    _compare(labels, stack, rng.random(labels.shape, dtype=np.float32) if with_uncertainty else None)


def test_empty_labels_give_no_rows():
    assert cell_table("img", np.zeros((20, 30), np.uint16), np.ones((2, 20, 30)), ["a", "b"], None) == []
