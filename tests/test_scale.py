"""The working scale (``[preprocess] downsample``): block means in, objects drawn back at full resolution, on every path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.draw import disk

import stainseg
from stainseg.config import config_from_dict
from stainseg.errors import StainsegError
from stainseg.model import Model
from stainseg.scale import downsample_labels, downsample_planes, upsample, upsample_linear, working_downsample
from stainseg.segment.band_scale import refine_rows, upsample_linear_rows
from stainseg.segment.upscale import foreground_of, instance_labels, refine_labels

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc039"
OPTIONS = dict(crop_size=64, batch_size=2, progress=False, device="cpu", seed=0)


def _field(seed: int, shape=(150, 190)) -> tuple[np.ndarray, np.ndarray]:
    """A nuclei-like field with objects of about 34 px diameter (so ``"auto"`` halves it) and its labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    centres = [(30, 30), (35, 100), (40, 160), (100, 45), (105, 115), (110, 165)]
    for i, (cy, cx) in enumerate(centres, 1):
        labels[disk((cy + rng.integers(-4, 5), cx + rng.integers(-4, 5)), 17, shape=shape)] = i
    image = rng.normal(200.0, 10.0, shape) + 600.0 * (labels > 0)
    return image.astype(np.float32), labels


def test_block_means_and_label_samples_cover_the_same_pixels():
    rng = np.random.default_rng(0)
    planes = rng.random((2, 9, 13)).astype(np.float32)
    small = downsample_planes(planes, 2)
    assert small.shape == (2, 5, 7)
    np.testing.assert_allclose(small[:, :4, :6], planes[:, :8, :12].reshape(2, 4, 2, 6, 2).mean(axis=(2, 4)), rtol=1e-6)
    np.testing.assert_allclose(small[:, 4, 6], planes[:, 8, 12])  # an edge block of one pixel is that pixel
    _, labels = _field(0)
    back = upsample(downsample_labels(labels, 2), 2, labels.shape)
    assert back.shape == labels.shape and set(np.unique(back)) == set(np.unique(labels))
    agree = np.count_nonzero(back == labels) / labels.size
    assert agree > 0.97  # only boundary pixels move, by at most one pixel


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_linear_upsampling_is_torch_bilinear_between_block_centres(factor):
    import torch

    small = np.random.default_rng(factor).random((2, 13, 17), dtype=np.float32)
    shape = (13 * factor - 1, 17 * factor - (factor - 1))  # sides that were padded up to a multiple of f
    ours = upsample_linear(small, factor, shape)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(small)[None], scale_factor=factor, mode="bilinear",
                                             align_corners=False)[0].numpy()[:, :shape[0], :shape[1]]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # a constant map stays constant
    np.testing.assert_allclose(upsample_linear(np.full((5, 6), 0.3, np.float32), factor, (5 * factor, 6 * factor)), 0.3, atol=1e-6)
    out = np.zeros((2,) + shape, np.float32)
    upsample_linear_rows(small, out, factor, band=4)
    np.testing.assert_array_equal(out, ours)


def _blurred_field(labels: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """A (2, Y, X) probability map whose foreground is the smoothed mask of ``labels`` (the network's soft outline)."""
    from scipy import ndimage as ndi

    fg = ndi.gaussian_filter((labels > 0).astype(np.float32), sigma)
    return np.stack([1.0 - fg, fg]).astype(np.float32)


def _mean_iou(truth: np.ndarray, found: np.ndarray) -> float:
    ious = []
    for i in np.unique(truth[truth > 0]):
        t = truth == i
        j = np.bincount(found[t]).argmax()
        f = found == j if j else np.zeros_like(t)
        ious.append((t & f).sum() / (t | f).sum())
    return float(np.mean(ious))


def test_objects_are_drawn_at_full_resolution_closer_to_the_truth_than_repeated_blocks():
    """Found at half resolution, redrawn along the interpolated probability: the outlines of the full-size objects."""
    _, truth = _field(11, shape=(151, 187))
    prob = downsample_planes(_blurred_field(truth), 2)  # what a network at the working scale sees of soft outlines
    options = {"threshold": 0.5, "min_size": 20, "min_distance": None, "min_depth": None, "smoothing": None, "dilation": 1}
    from stainseg.segment.instances import probability_to_labels

    blocks = upsample(probability_to_labels(prob, **options), 2, truth.shape)
    drawn = instance_labels(prob, options, 2, truth.shape)
    assert drawn.shape == truth.shape and drawn.max() == blocks.max() == 6
    assert _mean_iou(truth, drawn) > _mean_iou(truth, blocks) + 0.005 and _mean_iou(truth, drawn) > 0.97
    # the dilation keeps its reach: 3 at the working scale is one working px, two full-resolution px
    grown = instance_labels(prob, {**options, "dilation": 3}, 2, truth.shape)
    from scipy import ndimage as ndi

    assert np.array_equal(grown > 0, ndi.binary_dilation(drawn > 0, np.ones((5, 5), bool)))


def test_a_vanishing_object_leaves_no_gap_in_the_numbers_and_bands_draw_the_whole_image():
    from scipy import ndimage as ndi

    fg = np.zeros((60, 50), np.float32)
    fg[5:15, 5:15] = 0.95
    fg[20:21, 10:40] = 0.95  # a thread one working px wide: below a 0.9 threshold once interpolated
    fg[40:52, 20:34] = 0.95
    small, n = ndi.label(fg > 0.9)
    assert n == 3
    whole = refine_labels(small, fg, 2, (120, 100), 0.9, dilation=3)
    assert sorted(np.unique(whole).tolist()) == [0, 1, 2]
    prob = np.stack([1.0 - fg, fg])
    for band in (7, 16, 60):
        out = np.zeros((120, 100), np.int32)
        assert refine_rows(small, prob, out, 2, n, 0.9, dilation=3, band=band) == 2
        np.testing.assert_array_equal(out, whole)
    # with the model's smoothing the bands read the Gaussian's reach too
    smooth = refine_labels(small, foreground_of(prob, 1.5), 2, (120, 100), 0.5, dilation=3)
    out = np.zeros((120, 100), np.int32)
    refine_rows(small, prob, out, 2, n, 0.5, dilation=3, smoothing=1.5, band=9)
    np.testing.assert_array_equal(out, smooth)


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/bbbc039 is not there (real BBBC039 manual masks)")
def test_real_nuclei_outlines_at_full_resolution_from_half_resolution():
    """Real U2OS nuclei (manual masks of BBBC039): redrawn outlines match the masks better than repeated blocks."""
    from stainseg.io.images import read_labels
    from stainseg.segment.instances import probability_to_labels

    masks = sorted((DATA / "masks").glob("*.png"))[:3]
    options = {"threshold": 0.5, "min_size": 20, "min_distance": None, "min_depth": None, "smoothing": None, "dilation": 1}
    for path in masks:
        truth = read_labels(path).astype(np.int32)
        small = downsample_planes(_blurred_field(truth), 2)
        blocks = upsample(probability_to_labels(small, **options), 2, truth.shape)
        drawn = instance_labels(small, options, 2, truth.shape)
        assert _mean_iou(truth, drawn) > _mean_iou(truth, blocks), path.name


def test_auto_chooses_the_factor_from_the_object_diameter():
    assert [working_downsample(d) for d in (10.0, 14.4, 27.9, 28.0, 30.3, 60.0, 500.0)] == [1, 1, 1, 2, 2, 4, 4]


def test_config_accepts_auto_and_small_integers_only():
    base = {"root": "images", "pattern": "(?P<channel>[a-z]+)[.]tif", "channels": {"input": ["bf"], "nuclei": "dna"}}
    assert config_from_dict({**base, "preprocess": {"downsample": "auto"}}).preprocess.downsample == "auto"
    assert config_from_dict({**base, "preprocess": {"downsample": 2}}).preprocess.downsample == 2
    for bad in (0, 9, "half", 1.5):
        with pytest.raises(StainsegError, match="preprocess.downsample"):
            config_from_dict({**base, "preprocess": {"downsample": bad}})


@pytest.fixture(scope="module")
def auto_model(tmp_path_factory) -> Path:
    """A model trained with ``downsample = "auto"`` on two fields of 34-px objects: it works at 1/2."""
    cfg = stainseg.config.ExperimentConfig()
    cfg.preprocess.downsample = "auto"
    fields = [_field(1), _field(2)]
    folder = tmp_path_factory.mktemp("scale") / "model"
    stainseg.train([f[0] for f in fields], [f[1] for f in fields], out=folder, iterations=60, cfg=cfg, **OPTIONS)
    return folder


def test_auto_training_stores_the_factor_and_its_reason(auto_model):
    meta = json.loads((auto_model / "model.json").read_text())
    assert meta["preprocessing"]["downsample"] == 2
    reason = meta["training"]["downsample"]
    assert reason["factor"] == 2 and reason["from"] == "auto" and 28 <= reason["diameter"] <= 40
    # the instance settings were derived at the working scale: a 34-px object is 17 px there
    assert meta["derived"]["objects"]["diameter"] < 25


def test_every_output_has_the_input_size(auto_model):
    model = Model.load(auto_model, device="cpu", engine="torch")
    image, labels = _field(3, shape=(151, 187))  # odd sides: padded at the working scale, cut again
    assert model.prepare(image).shape == (1, 76, 94)
    result = model.run(image)
    assert result["labels"].shape == image.shape and result["probability"].shape == (2,) + image.shape
    assert model.predict_probability(image).shape == (2,) + image.shape
    found = result["labels"]
    assert 4 <= len(np.unique(found[found > 0])) <= 8  # six objects, found at full size after 60 iterations


def test_calibration_takes_full_size_labels_of_raw_images(auto_model):
    model = Model.load(auto_model, device="cpu", engine="torch")
    image, labels = _field(8)
    record = model.calibrate([image], [labels])  # raw image, full-size labels: reduced to the working scale
    assert record["objects"] >= 5 and model.derived["objects"]["diameter"] < 25
    with pytest.raises(StainsegError, match="do not match their image"):
        model.calibrate([image], [labels[:100]])


def test_onnx_and_torch_give_the_same_labels_at_the_working_scale(auto_model):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    image, _ = _field(4)
    torch_labels = Model.load(auto_model, device="cpu", engine="torch").segment(image)
    onnx_labels = Model.load(auto_model, device="cpu", engine="onnx").segment(image)
    assert np.count_nonzero(torch_labels != onnx_labels) <= 0.001 * image.size


def test_cli_segment_writes_full_size_labels(auto_model, tmp_path):
    image, _ = _field(5)
    tifffile.imwrite(tmp_path / "field.tif", image)
    run = subprocess.run([sys.executable, "-m", "stainseg.cli", "segment", str(auto_model), str(tmp_path / "field.tif"),
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert tifffile.imread(tmp_path / "out" / "labels" / "field.tif").shape == image.shape


def test_blockwise_gives_the_objects_of_the_whole_image(auto_model, tmp_path):
    from stainseg.segment.blockwise import read_blockwise_labels, segment_blockwise

    rng = np.random.default_rng(9)
    image = np.concatenate([_field(9)[0], _field(10)[0]], axis=0)[:, :181] + rng.normal(0, 1, (300, 181)).astype(np.float32)
    model = Model.load(auto_model, device="cpu", engine="torch")
    whole = model.run(image)
    result = segment_blockwise(model, image[None], tmp_path / "out", name="tall", band=48, save_probability=True)
    labels = np.asarray(read_blockwise_labels(result.labels_path))
    assert labels.shape == image.shape and result.objects == len(np.unique(whole["labels"])) - 1
    # the same objects pixel for pixel (ids may differ: bands number them in their own order)
    pairs = set(zip(labels[labels > 0].tolist(), whole["labels"][labels > 0].tolist()))
    assert len(pairs) == result.objects and np.array_equal(labels > 0, whole["labels"] > 0)
    import zarr

    prob = zarr.open_array(str(result.probability_path), mode="r")
    assert prob.shape == (2,) + image.shape
    np.testing.assert_allclose(np.asarray(prob), whole["probability"], atol=1e-4)


def test_bioimageio_package_averages_the_blocks_itself(auto_model, tmp_path):
    pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed")
    import io
    import zipfile

    import torch

    from stainseg.export.bioimageio import BioimageioStainNet, export_bioimageio

    image, _ = _field(7)
    package = export_bioimageio(auto_model, tmp_path / "model.zip", sample=image[None])
    with zipfile.ZipFile(package) as zf:
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
        state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)
        readme = zf.read("README.md").decode()
    assert "averages 2 x 2 blocks" in readme and "multiples of 16" in readme and "at 1/2 of the resolution" in readme
    from bioimageio.spec import load_description

    kwargs = load_description(package).weights.pytorch_state_dict.architecture.kwargs
    assert kwargs["downsample"] == 2 and y.shape[-2:] == x.shape[-2:]
    wrapped = BioimageioStainNet(**kwargs)
    wrapped.load_state_dict(state)
    with torch.inference_mode():
        again = wrapped.eval()(torch.from_numpy(x)).numpy()
    assert float(np.abs(again - y).max()) < 1e-3


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/bbbc039 is not there (real BBBC039 fields)")
def test_bbbc039_nuclei_are_found_at_half_resolution():
    """Real U2OS nuclei (~30 px): ``"auto"`` halves them, and the full-size labels match the manual masks."""
    from stainseg.evaluate.summary import evaluate_pair
    from stainseg.io.images import read_image, read_labels

    images = sorted((DATA / "images").glob("*.tif"))
    train = images[:3]
    raws = [read_image(p) for p in train]
    labels = [stainseg.automatic_labels(nuclei=r) for r in raws]
    cfg = stainseg.config.ExperimentConfig()
    cfg.preprocess.downsample = "auto"
    model = stainseg.train(raws, labels, iterations=150, cfg=cfg, **{**OPTIONS, "crop_size": 128, "batch_size": 4})
    assert model.preprocessing.downsample == 2
    test = images[50]
    found = model.segment(read_image(test))
    manual = read_labels(DATA / "masks" / (test.stem + ".png"))
    assert found.shape == manual.shape
    assert evaluate_pair(manual.astype(np.int32), found.astype(np.int32))["f1"] > 0.8
