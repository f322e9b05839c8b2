"""Probability map → instance labels (METHOD.md 5.3-5.4): seeds, watershed, size filter, dilation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.segment.instances import dilate_labels, labels_blockwise, probability_to_labels


def _cells(shape=(256, 256), n=40, radius=(7, 11), seed=0):
    """Touching round cells: a 'true' label image (Voronoi split of overlapping disks)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(12, np.array(shape) - 12, (n, 2)).astype(int)
    radii = rng.uniform(*radius, n)
    seeds = np.zeros(shape, np.int32)
    seeds[centres[:, 0], centres[:, 1]] = np.arange(1, n + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    owner = seeds[iy, ix]
    truth = np.where(dist < np.r_[0, radii][owner], owner, 0)
    return truth


def _prob_maps(truth):
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.5)
    edge = ndi.morphological_gradient(truth, size=3) > 0
    boundary = np.minimum(ndi.gaussian_filter(edge.astype(np.float32), 1.0) * 2, 1) * fg
    p2 = np.stack([1 - fg, fg])
    p3 = np.stack([1 - fg, np.clip(fg - boundary, 0, 1), boundary])
    return p2, p3


def _matched_fraction(truth, labels, iou=0.5):
    """Fraction of true objects with a predicted object of IoU > iou."""
    n_t, n_p = truth.max() + 1, labels.max() + 1
    inter = np.bincount(truth.ravel() * n_p + labels.ravel(), minlength=n_t * n_p).reshape(n_t, n_p)
    area_t, area_p = inter.sum(1), inter.sum(0)
    union = area_t[:, None] + area_p[None, :] - inter
    ious = inter[1:, 1:] / np.maximum(union[1:, 1:], 1)
    present = area_t[1:] > 0
    return float((ious.max(1)[present] > iou).mean())


@pytest.mark.parametrize("head", [2, 3])
def test_touching_cells_are_separated(head):
    truth = _cells()
    p2, p3 = _prob_maps(truth)
    labels = probability_to_labels(p3 if head == 3 else p2, dilation=1)
    assert labels.dtype == np.uint16
    n_true = len(np.unique(truth)) - 1
    assert abs(int(labels.max()) - n_true) <= 0.15 * n_true
    assert _matched_fraction(truth, labels) > (0.9 if head == 3 else 0.75)
    # labels are consecutive 1..n and all inside the foreground
    assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))
    assert not np.any(labels[(1 - p2[0]) <= 0.5])


def test_empty_and_constant_maps_give_no_objects():
    for value in (0.0, 0.5, 1.0):
        p = np.zeros((2, 64, 64), np.float32)
        p[0] = 1 - value if value != 0.5 else 0.5
        p[1] = 1 - p[0]
        labels = probability_to_labels(p)
        if value == 1.0:  # all foreground: one object, no crash
            assert labels.max() == 1
        else:
            assert labels.max() == 0 and labels.shape == (64, 64)
    assert probability_to_labels(np.stack([np.ones((32, 32)), np.zeros((32, 32)), np.zeros((32, 32))])).max() == 0


def test_min_size_removes_small_objects():
    p = np.zeros((2, 80, 80), np.float32)
    p[1, 10:30, 10:30] = 1
    p[1, 50:52, 50:52] = 1  # 4 px speck
    p[0] = 1 - p[1]
    assert probability_to_labels(p, dilation=1).max() == 1  # default: 10 % of median area
    assert probability_to_labels(p, dilation=1, min_size=1).max() == 2


def test_dilation_never_overwrites_or_merges_neighbours():
    truth = _cells(n=60, seed=3)
    for size in (3, 9):
        grown = dilate_labels(truth, size)
        inside = truth > 0
        np.testing.assert_array_equal(grown[inside], truth[inside])  # nobody overwritten
        assert set(np.unique(grown)) == set(np.unique(truth))  # nothing merged or lost
        for lab in np.unique(truth)[1:]:
            # each label only grows within its own square neighbourhood ...
            reach = ndi.binary_dilation(truth == lab, np.ones((size, size), bool))
            assert not np.any((grown == lab) & ~reach)
            # ... and its pixels stay one connected piece
            assert ndi.label(grown == lab, np.ones((3, 3)))[1] == 1


def test_dilation_grows_an_isolated_object_by_the_full_square():
    lab = np.zeros((30, 30), np.uint32)
    lab[10:14, 12:15] = 7
    grown = dilate_labels(lab, 9)
    expected = ndi.binary_dilation(lab > 0, np.ones((9, 9), bool))
    np.testing.assert_array_equal(grown > 0, expected)
    assert grown.dtype == np.uint32 and set(np.unique(grown)) == {0, 7}
    np.testing.assert_array_equal(dilate_labels(lab, 1), lab)
    with pytest.raises(ValueError):
        dilate_labels(lab, 4)


def test_dilation_splits_a_gap_between_two_objects():
    lab = np.zeros((9, 12), np.uint16)
    lab[4, 2], lab[4, 8] = 1, 2
    row = dilate_labels(lab, 9)[4]
    # columns 3-5 are nearer to 1 (distance 1..3 vs 5..3: tie at 5 goes to the larger label)
    assert list(row[:5]) == [1] * 5 and list(row[6:]) == [2] * 6 and row[5] == 2


def test_bad_shape_raises():
    with pytest.raises(ValueError):
        probability_to_labels(np.zeros((4, 8, 8), np.float32))


def test_blockwise_labels_match_whole_image_labels(tmp_path):
    zarr = pytest.importorskip("zarr")
    truth = _cells(shape=(400, 200), n=60, seed=5)
    _, p3 = _prob_maps(truth)
    prob = zarr.open(str(tmp_path / "p.zarr"), mode="w", shape=p3.shape, dtype="f4", chunks=(3, 64, 64))
    prob[:] = p3
    out = zarr.open(str(tmp_path / "l.zarr"), mode="w", shape=p3.shape[1:], dtype="u4", chunks=(64, 64), fill_value=0)
    n = labels_blockwise(prob, out, band=96, margin=40, dilation=3, min_size=20)
    blockwise = out[:]
    whole = probability_to_labels(p3, dilation=3, min_size=20)
    assert n == blockwise.max() == whole.max()
    assert set(np.unique(blockwise)) == set(range(n + 1))
    # every object is one piece (none cut at a band border) and matches the whole-image result
    for lab in range(1, n + 1):
        assert ndi.label(blockwise == lab, np.ones((3, 3)))[1] == 1
    assert _matched_fraction(whole, blockwise, iou=0.8) > 0.95


@pytest.mark.data
def test_real_nucleus_shapes_are_recovered(bbbc039):
    """BBBC039 manual masks (real, touching nuclei) → ideal probability maps → the same objects."""
    from stainseg.io.images import read_labels

    mask_path = sorted((bbbc039 / "masks").glob("*.png"))[0]
    truth = read_labels(mask_path).astype(np.int32)
    p2, p3 = _prob_maps(truth)
    assert _matched_fraction(truth, probability_to_labels(p3, dilation=1)) > 0.9
    assert _matched_fraction(truth, probability_to_labels(p2, dilation=1)) > 0.75


def test_banded_watershed_equals_whole_image_watershed():
    """Row bands flooded on two threads give the whole-image watershed, pixel for pixel."""
    from skimage.segmentation import watershed

    from stainseg.segment.instances import watershed_bands
    from stainseg.segment.seeds import distance_seeds, seed_unseeded

    truth = _cells(shape=(1200, 700), n=1400, radius=(7, 12), seed=3)  # confluent: large touching clusters
    mask = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.5) > 0.5
    markers, surface, _ = distance_seeds(mask, None)
    markers = seed_unseeded(markers, mask)
    whole = watershed(surface, markers, mask=mask)
    banded = watershed_bands(surface, markers, mask, threads=2, band=128, margin=64)
    assert int(markers.max()) > 500
    np.testing.assert_array_equal(banded, whole)


def test_banded_watershed_refloods_objects_beyond_the_margin():
    """An object whose only seed is further than the margin from a band still gets every pixel."""
    from stainseg.segment.instances import watershed_bands

    mask = np.zeros((900, 60), bool)
    mask[20:880, 20:40] = True  # one long object
    markers = np.zeros(mask.shape, np.int32)
    markers[30, 30] = 7
    surface = np.zeros(mask.shape, np.uint8)
    labels = watershed_bands(surface, markers, mask, threads=2, band=128, margin=16)
    assert set(np.unique(labels[mask])) == {7} and not labels[~mask].any()


def test_plateau_of_tied_maxima_gives_one_seed_quickly():
    """A huge flat-topped object (a poor model's map) is one object, without a spacing check per tied peak."""
    import time

    prob = np.zeros((2, 1024, 1024), np.float32)
    prob[0] = 1.0
    prob[:, 100:900, 60:980] = [[[0.0]], [[1.0]]]  # a ridge of ~100,000 tied distance maxima
    start = time.perf_counter()
    labels = probability_to_labels(prob, dilation=1)
    assert int(labels.max()) == 1
    assert time.perf_counter() - start < 30  # peak_local_max's spacing check took minutes here


@pytest.mark.parametrize("seed", [5, 6])
def test_seeds_are_those_of_peak_local_max(seed):
    """The max-filter seeds are exactly skimage's peak_local_max (min_distance spacing, ties in raster order)."""
    from skimage.feature import peak_local_max

    from stainseg.segment.seeds import distance_peaks, distance_seeds, mask_components

    truth = _cells(shape=(512, 512), n=160, radius=(7, 11), seed=seed)
    mask = (1 - _prob_maps(truth)[0][0]) > 0.5
    # integer chamfer distances (many tied maxima) and the smoothed Euclidean map the seeds use
    twice = (ndi.distance_transform_cdt(mask, metric="chessboard") + ndi.distance_transform_cdt(mask, metric="taxicab")).astype(np.uint16)
    smooth = distance_seeds(mask, None)[2]
    for height in (twice, smooth):
        for d in (3, 6, 9):
            ours = distance_peaks(height, mask, d) > 0
            reference = np.zeros(mask.shape, bool)
            peaks = peak_local_max(height.astype(np.float32), min_distance=d, threshold_abs=1e-6, exclude_border=False)
            reference[tuple(peaks.T)] = True
            assert ours.sum() > 50
            np.testing.assert_array_equal(ours, reference)
            # window maxima taken in each component's box (the path probability_to_labels takes)
            boxed = distance_peaks(height, mask, d, mask_components(mask)) > 0
            np.testing.assert_array_equal(boxed, reference)


def _two_discs(distance: int, radius: int = 12, size: int = 80) -> np.ndarray:
    """A 2-class map of two overlapping discs whose centres are ``distance`` px apart."""
    yy, xx = np.mgrid[:size, :size]
    c = size // 2
    fg = ((yy - c) ** 2 + (xx - c + distance / 2) ** 2 < radius**2) | ((yy - c) ** 2 + (xx - c - distance / 2) ** 2 < radius**2)
    fg = fg.astype(np.float32)
    return np.stack([1 - fg, fg])


def test_a_shallow_neck_is_one_object_and_a_deep_neck_two():
    """Basins are kept apart only by a dip of at least min_depth in the distance map (the neck)."""
    # centres 10 px apart (radius 12): the neck is ~1 px narrower than the discs, two distance maxima
    dented = _two_discs(10)
    assert int(probability_to_labels(dented, dilation=1, min_distance=3, min_depth=0).max()) == 2
    assert int(probability_to_labels(dented, dilation=1, min_distance=3, min_depth=2).max()) == 1
    # 20 px apart: the neck is ~5 px narrower than the discs (two touching nuclei), whatever the depth up to that
    for depth in (None, 0, 2):
        assert int(probability_to_labels(_two_discs(20), dilation=1, min_depth=depth).max()) == 2


def test_merge_shallow_basins_keeps_background_and_higher_peak_label():
    from stainseg.segment.seeds import merge_shallow_basins

    height = np.array([[0, 2, 1.8, 3, 0, 4, 0]], np.float32)
    labels = np.array([[0, 1, 1, 2, 0, 3, 0]], np.int32)
    merged = merge_shallow_basins(labels, height, 0.5)
    assert merged.tolist() == [[0, 2, 2, 2, 0, 3, 0]]  # basin 2 has the higher peak
    assert merged.dtype == labels.dtype
    np.testing.assert_array_equal(merge_shallow_basins(labels, height, 0.0), labels)
    np.testing.assert_array_equal(merge_shallow_basins(np.zeros((3, 3), np.int32), np.zeros((3, 3)), 1.0), 0)


def test_instances_move_with_the_image():
    """The same map moved by (37, 91) px gives the same objects: seeds and merges do not follow the pixel grid's origin."""
    truth = _cells(shape=(400, 400), n=180, radius=(7, 12), seed=4)
    p2, _ = _prob_maps(truth)
    dy, dx = 37, 91
    moved = np.pad(p2, ((0, 0), (dy, 0), (dx, 0)))
    moved[0, :dy] = 1.0
    moved[0, :, :dx] = 1.0
    a = probability_to_labels(p2, dilation=3)
    b = probability_to_labels(moved, dilation=3)[dy:, dx:]
    assert int(a.max()) > 100
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == int(a.max()) + 1  # one-to-one: the same partition, only renumbered
    np.testing.assert_array_equal(a > 0, b > 0)


def test_segment_config_min_depth_reaches_the_watershed():
    """``[segment] min_depth`` of a model's settings is what segmentation uses."""
    from stainseg.model import Model
    from stainseg.segment.instances import probability_to_labels

    model = Model.new(["DNA"])
    model.segment_settings.dilation = 1
    prob = _two_discs(14)  # a neck ~2.3 px narrower than the discs
    assert int(probability_to_labels(prob, **model.instance_options()).max()) == 2
    model.segment_settings.min_depth = 3.0
    assert int(probability_to_labels(prob, **model.instance_options()).max()) == 1


# ----------------------------------------------------------------------------- speed-ups give the same labels


def _reference_labels(prob, threshold=0.5, dilation=3):
    """probability_to_labels (2-class) written plainly: whole-image EDT and Gaussian, peak groups from a
    dilated peak image, np.maximum.at basin peaks, np.where for unseeded components, two bincounts."""
    from skimage.segmentation import watershed

    from stainseg.segment import seeds

    mask = (1.0 - prob[0]) > threshold
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask).astype(np.float32), seeds.SEED_SIGMA, output=np.float32)
    distance *= mask
    min_distance = max(2, int(round(0.6 * seeds.typical_radius(distance, mask))))
    limit = seeds.PEAK_GRAPH_LIMIT
    try:
        seeds.PEAK_GRAPH_LIMIT = -1  # the dilated-image grouping
        markers = seeds.distance_peaks(distance, mask, min_distance)
    finally:
        seeds.PEAK_GRAPH_LIMIT = limit
    components, n = ndi.label(mask)
    seeded = np.zeros(n + 1, bool)
    seeded[components[markers > 0]] = True
    seeded[0] = True
    lut = np.zeros(n + 1, np.int64)
    lut[~seeded] = markers.max() + np.arange(1, int((~seeded).sum()) + 1)
    extra = lut[components]
    markers = np.where(extra > 0, extra, markers).astype(np.int32)
    surface = (65535.0 - np.minimum(np.rint(64.0 * distance), 65535.0)).astype(np.uint16)
    labels = watershed(surface, markers, mask=mask)
    # merge_shallow_basins with np.maximum.at peaks
    n = int(labels.max())
    peak = np.full(n + 1, -np.inf)
    inside = labels.ravel() > 0
    np.maximum.at(peak, labels.ravel()[inside], distance.ravel()[inside])
    np.testing.assert_array_equal(seeds._label_maxima(labels, distance, n), peak)
    labels = seeds.merge_shallow_basins(labels, distance, seeds.MIN_DEPTH)
    areas = np.bincount(labels.ravel())[1:]
    min_size = max(4, int(0.1 * np.median(areas[areas > 0])))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    relabel = np.zeros(sizes.size, np.int64)
    relabel[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = relabel[labels].astype(np.uint16)
    for _ in range((dilation - 1) // 2):
        grown = ndi.grey_dilation(labels, footprint=np.ones((3, 3), bool))
        labels = np.where(labels == 0, grown, labels)
    return labels


def _speckled_map(shape=(300, 300), seed=0):
    """Cells and thousands of 1-3 px specks: more components than the crop-wise distance map takes."""
    truth = _cells(shape=shape, n=40, seed=seed)
    rng = np.random.default_rng(seed)
    fg = (truth > 0).astype(np.float32)
    fg[rng.random(shape) < 0.08] = 1.0
    return np.stack([1 - fg, fg])


@pytest.mark.parametrize("case", ["clusters", "border", "confluent", "speckled"])
def test_fast_post_processing_is_pixel_identical_to_the_plain_computation(case):
    from stainseg.segment import seeds

    if case == "clusters":  # touching groups with background between them
        prob = _prob_maps(_cells(shape=(600, 600), n=150, radius=(7, 12), seed=8))[0]
    elif case == "border":  # objects cut by every image edge
        prob = _prob_maps(_cells(shape=(700, 400), n=90, radius=(7, 12), seed=9)[20:-15, 10:-25])[0]
    elif case == "confluent":
        prob = _prob_maps(_cells(shape=(600, 500), n=500, radius=(7, 12), seed=8))[0]
    else:
        prob = _speckled_map()
    mask = (1 - prob[0]) > 0.5
    reference = ndi.gaussian_filter(ndi.distance_transform_edt(mask).astype(np.float32), seeds.SEED_SIGMA, output=np.float32) * mask
    np.testing.assert_array_equal(seeds.distance_map(mask), reference)
    crop_wise = seeds._crop_wise(seeds._component_boxes(*seeds.mask_components(mask)), 4, mask.shape)
    assert crop_wise == (case in ("clusters", "border"))  # the others take the whole-image path
    np.testing.assert_array_equal(probability_to_labels(prob, dilation=3), _reference_labels(prob, dilation=3))


@pytest.mark.data
def test_fast_post_processing_is_pixel_identical_on_bbbc039_nuclei(bbbc039):
    """Four BBBC039 manual masks side by side (1,040 x 1,392, ~450 real nuclei), smoothed into a 2-class map."""
    from stainseg.io.images import read_labels

    tiles = []
    for path in sorted((bbbc039 / "masks").glob("*.png"))[:4]:
        tiles.append(read_labels(path).astype(np.int32))
    truth = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    fg = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.5)
    prob = np.stack([1 - fg, fg])
    labels = probability_to_labels(prob, dilation=3)
    assert int(labels.max()) > 300
    np.testing.assert_array_equal(labels, _reference_labels(prob, dilation=3))
