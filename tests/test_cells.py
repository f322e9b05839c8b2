"""Whole cells by seeded watershed from the nuclei on the dilated cytoplasm stain (METHOD.md 1.4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.errors import StainsegError
from stainseg.groundtruth.cells import dilation_footprint, enhance_cytoplasm, segment_cells
from stainseg.groundtruth.nuclei import segment_nuclei
from stainseg.io.images import read_image


def _assert_one_nucleus_per_cell(cells: np.ndarray, nuclei: np.ndarray) -> None:
    ids = set(np.unique(cells)) - {0}
    assert ids == set(np.unique(nuclei)) - {0}  # no cell without a nucleus, no nucleus without a cell
    for k in ids:
        assert np.all(cells[nuclei == k] == k)  # the whole nucleus lies in its cell
        inside = np.unique(nuclei[cells == k])
        assert set(inside) - {0} == {k}  # and no other nucleus does


def _two_cells(rng):
    """Two touching cells (bright cytoplasm, dim line between them) and a cytoplasm blob without nucleus."""
    shape = (120, 200)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    cyto = np.full(shape, 10.0)
    cyto[(yy - 60) ** 2 / 35 ** 2 + (xx - 60) ** 2 / 40 ** 2 <= 1] = 100
    cyto[(yy - 60) ** 2 / 35 ** 2 + (xx - 135) ** 2 / 40 ** 2 <= 1] = 100
    cyto[:, 96:99] = np.minimum(cyto[:, 96:99], 50)  # the dim boundary where they touch
    cyto[10:25, 180:195] = 100  # debris: foreground without a nucleus
    cyto = ndi.gaussian_filter(cyto, 1) + rng.normal(0, 2, shape)
    nuclei = np.zeros(shape, np.int32)
    nuclei[(yy - 60) ** 2 + (xx - 55) ** 2 <= 100] = 1
    nuclei[(yy - 60) ** 2 + (xx - 140) ** 2 <= 100] = 2
    return cyto.astype(np.float32), nuclei


def test_two_touching_cells_split_at_dim_line_and_debris_dropped():
    cyto, nuclei = _two_cells(np.random.default_rng(0))
    cells = segment_cells(cyto, nuclei)
    _assert_one_nucleus_per_cell(cells, nuclei)
    assert cells[10:25, 180:195].max() == 0
    assert 2500 < np.count_nonzero(cells == 1) < 5500 and 2500 < np.count_nonzero(cells == 2) < 5500
    row = cells[60]
    boundary_x = np.flatnonzero((row[:-1] == 1) & (row[1:] == 2))  # where cell 1 meets cell 2 on the middle row
    assert len(boundary_x) and 93 <= boundary_x[0] <= 101


def test_footprint_and_dilation():
    fp = dilation_footprint(5)
    assert fp.shape == (5, 5) and fp[2].all() and not fp[0, 0]
    image = np.zeros((9, 9), np.float32)
    image[4, 4] = 1
    assert np.count_nonzero(enhance_cytoplasm(image, 5)) == fp.sum()
    with pytest.raises(StainsegError):
        dilation_footprint(0)


def test_bad_inputs():
    cyto, nuclei = _two_cells(np.random.default_rng(1))
    with pytest.raises(StainsegError, match="shape"):
        segment_cells(cyto, nuclei[:-1])
    assert segment_cells(cyto, np.zeros_like(nuclei)).max() == 0
    assert segment_cells(np.zeros_like(cyto), nuclei).max() == 2  # a blank stain leaves the nuclei as cells


def test_cellprofiler_human_every_cell_has_one_nucleus(cellprofiler_human):
    stem = "AS_09125_050116030001_D03f00"
    dna = read_image(cellprofiler_human / f"{stem}d0.tif")
    body = read_image(cellprofiler_human / f"{stem}d2.tif")
    nuclei = segment_nuclei(dna)
    cells = segment_cells(body, nuclei)
    assert nuclei.max() > 200  # the field holds about 300 nuclei
    _assert_one_nucleus_per_cell(cells, nuclei)
    # cells are bigger than their nuclei on the whole
    assert np.count_nonzero(cells) > 1.5 * np.count_nonzero(nuclei)
