"""Illumination correction by iterative spline background fitting (METHOD.md 1.1)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.errors import StainsegError
from stainseg.groundtruth.illumination import (apply_field, background_field, correct_illumination, flat_field,
                                               plate_illumination)


def _cells(shape, n_cells, rng, radius=12.0, brightness=400.0):
    """Flat background 100 + blob cells (smoothed disks of random brightness); returns image and cell mask."""
    seeds = np.zeros(shape, np.float32)
    yx = rng.integers(0, shape, size=(n_cells, 2))
    seeds[yx[:, 0], yx[:, 1]] = rng.uniform(0.5, 1.5, n_cells)
    disk = ndi.grey_dilation(seeds, footprint=np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius)
    cells = ndi.gaussian_filter(disk, 2.0) * brightness
    return 100.0 + cells, cells > 1.0


def _gradient(shape, ratio=3.0):
    """Multiplicative field rising linearly from 1 (top-left) to ``ratio`` (bottom-right)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = (yy / (shape[0] - 1) + xx / (shape[1] - 1)) / 2
    return 1 + (ratio - 1) * t


def _cv(values):
    return float(values.std() / values.mean())


def test_removes_3x_gradient_cv_drops_5x():
    rng = np.random.default_rng(1)
    shape = (512, 640)
    clean, cell_mask = _cells(shape, 120, rng)
    image = (clean + rng.normal(0, 2.0, shape)) * _gradient(shape, 3.0)
    background = ~ndi.binary_dilation(cell_mask, iterations=3)
    assert 0.15 < cell_mask.mean() < 0.5  # a realistic amount of foreground
    corrected, field = correct_illumination(image.astype(np.float32))
    before, after = _cv(image[background]), _cv(corrected[background])
    assert before / after >= 5.0, (before, after)
    assert field.shape == shape and field.dtype == np.float32
    assert abs(float(field.mean()) - 1.0) < 1e-4
    # the field follows the true gradient (up to scale) within a few percent
    truth = _gradient(shape, 3.0)
    truth /= truth.mean()
    assert np.max(np.abs(field / truth - 1)) < 0.06


def test_flat_zero_and_constant_images_give_unit_field():
    for image in (np.zeros((64, 80), np.uint16), np.full((64, 80), 7, np.uint8)):
        field = background_field(image)
        np.testing.assert_allclose(field, 1.0, atol=1e-6)


def test_nan_pixels_are_a_clear_error():
    image = np.ones((64, 64), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(StainsegError, match="NaN"):
        correct_illumination(image)


def test_stack_is_corrected_plane_by_plane():
    rng = np.random.default_rng(2)
    shape = (256, 256)
    planes = [(_cells(shape, 40, rng)[0] + rng.normal(0, 2, shape)) * _gradient(shape, r) for r in (1.5, 3.0)]
    corrected, fields = correct_illumination(np.stack(planes).astype(np.float32))
    assert corrected.shape == fields.shape == (2, 256, 256)
    # plane 1 has the stronger gradient, so its field spans a wider range
    assert np.ptp(fields[1]) > np.ptp(fields[0]) * 1.5


def test_plate_illumination_from_many_images():
    rng = np.random.default_rng(3)
    shape = (256, 320)
    truth = _gradient(shape, 2.5)
    images = [((_cells(shape, 60, rng)[0] + rng.normal(0, 2, shape)) * truth * rng.uniform(0.8, 1.2)).astype(np.float32)
              for _ in range(6)]
    field = plate_illumination(iter(images))  # any iterable, e.g. a generator reading files
    assert abs(float(field.mean()) - 1) < 1e-4
    assert np.max(np.abs(field / (truth / truth.mean()) - 1)) < 0.06
    corrected = apply_field(images[0], field)
    assert corrected.shape == shape


def test_plate_illumination_rejects_mixed_sizes_and_no_images():
    with pytest.raises(StainsegError, match="shape"):
        plate_illumination([np.ones((64, 64)), np.ones((64, 72))])
    with pytest.raises(StainsegError, match="no images"):
        plate_illumination([])
    with pytest.raises(StainsegError, match="shape"):
        apply_field(np.ones((10, 12)), np.ones((10, 10)))


def test_dense_cells_are_not_mistaken_for_background():
    """57 % of the field covered by cells: the field still follows the true gradient."""
    rng = np.random.default_rng(4)
    shape = (512, 640)
    clean, cell_mask = _cells(shape, 300, rng)
    assert cell_mask.mean() > 0.5
    truth = _gradient(shape, 3.0)
    field = background_field(((clean + rng.normal(0, 2.0, shape)) * truth).astype(np.float32))
    assert np.max(np.abs(field / (truth / truth.mean()) - 1)) < 0.03


def test_confluent_patch_keeps_its_stain_cellprofiler_human(cellprofiler_human):
    """ExampleHuman cell-body stain: a large, evenly dim confluent patch must not be divided away."""
    from stainseg.io.images import read_image

    body = read_image(cellprofiler_human / "AS_09125_050116030001_D03f00d2.tif").astype(np.float32)
    corrected, field = correct_illumination(body)
    empty = np.median(corrected[0:70, 240:370])  # cell-free top of the field
    patch = np.median(corrected[200:400, 300:500])  # the dense patch on the right
    assert patch > 2 * empty, (patch, empty)  # raw: 28 vs 8; a fit that follows the patch gave 19 vs 19


def test_flat_field_from_many_images_follows_the_shared_gradient():
    """Cells in different places on each image, one illumination: the flat-field is the true field."""
    rng = np.random.default_rng(5)
    shape = (256, 320)
    truth = _gradient(shape, 2.5)
    images = [((_cells(shape, 80, rng)[0] + rng.normal(0, 2, shape)) * truth * rng.uniform(0.5, 2.0)).astype(np.float32)
              for _ in range(5)]
    field = flat_field(iter(images))  # any iterable
    assert field.shape == shape and field.dtype == np.float32
    assert abs(float(field.mean()) - 1) < 1e-4
    assert np.max(np.abs(field / (truth / truth.mean()) - 1)) < 0.03
    # it is the median of the per-image fields: no worse than the typical single-image fit
    single = [np.max(np.abs(background_field(im) / (truth / truth.mean()) - 1)) for im in images]
    assert np.max(np.abs(field / (truth / truth.mean()) - 1)) <= np.median(single) + 1e-3
    # one image: the flat-field is that image's own field
    np.testing.assert_allclose(flat_field([images[0]]), background_field(images[0]), rtol=1e-4)
    with pytest.raises(StainsegError, match="shape"):
        flat_field([np.ones((64, 64)), np.ones((64, 72))])
    with pytest.raises(StainsegError, match="no images"):
        flat_field([])


def test_flat_field_of_flat_images_is_one():
    np.testing.assert_allclose(flat_field([np.zeros((64, 80), np.uint16), np.full((64, 80), 9, np.uint16)]), 1.0, atol=1e-6)


@pytest.mark.data
def test_fast_field_equals_reference_on_real_planes(shared_data):
    """The block means and mean-1 scaling of background_field agree with the plain computation on real images.

    Reference: float copy, ``reshape(...).mean`` 4 x 4 block means, full-size evaluation of the fit,
    clamp at 0.1 and division by the pixel mean (the implementation before the speed-up).
    """
    from stainseg.groundtruth import illumination as il
    from stainseg.io.images import read_image

    paths = [sorted((shared_data / "bbbc039" / "images").glob("*.tif"))[0],
             sorted((shared_data / "deepcell" / "images").glob("*_phase.tif"))[0],
             shared_data / "isl" / "images" / "isl_s1_phase_z06.tif"]
    for path in paths:
        plane = read_image(path)
        image = plane.astype(np.float32)
        size = max(1, min(image.shape) // il.FIT_BLOCKS)
        ny, nx = image.shape[0] // size, image.shape[1] // size
        crop = image[: ny * size, : nx * size]
        if size >= 16 and size % 4 == 0:
            crop = crop.reshape(ny * size // 4, 4, nx * size // 4, 4).mean(axis=(1, 3), dtype=np.float32)
        inner = crop.shape[0] // ny
        medians = np.median(crop.reshape(ny, inner, nx, inner).transpose(0, 2, 1, 3).reshape(ny, nx, -1), axis=-1)
        np.testing.assert_allclose(il.block_medians(plane)[0], medians, rtol=1e-6)
        surface = il._fit_surface(medians.astype(np.float32), *il.block_medians(plane)[1:], image.shape, 5, 5, 2.0)
        reference = surface / surface.mean()
        np.maximum(reference, 0.1, out=reference)
        reference /= reference.mean()
        field = background_field(plane)
        assert np.max(np.abs(field / reference - 1)) < 1e-5, path.name


@pytest.mark.parametrize("grid", [2, 3, 4, 5, 8])
def test_own_bspline_basis_equals_scipys(grid):
    """The numpy Cox-de Boor basis (no scipy.interpolate import on the segment path) is scipy's design matrix."""
    from scipy.interpolate import BSpline

    from stainseg.groundtruth.illumination import _basis, bspline_design

    for length in (9, 520, 2048):
        order = min(3, grid - 1)
        inner = np.linspace(-0.5, length - 0.5, grid - order + 1)[1:-1]
        knots = np.concatenate([[-0.5] * (order + 1), inner, [length - 0.5] * (order + 1)])
        coords = np.concatenate([np.arange(length), np.random.default_rng(grid).uniform(-0.5, length - 0.5 - 1e-9, 40)])
        ours = bspline_design(coords, knots, order)
        np.testing.assert_allclose(ours, BSpline.design_matrix(coords, knots, order).toarray(), atol=1e-12)
        np.testing.assert_allclose(_basis(np.arange(length), length, grid).sum(axis=1), 1.0, atol=1e-12)
