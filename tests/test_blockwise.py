"""Block-wise segmentation of huge images (stainseg.segment.blockwise): the same input preparation and
the same objects as Model.run on the whole image, chosen by `stainseg segment` above the pixel budget
or for a zarr, written as an OME-Zarr label image, and never left half-written.

The fast tests replace the network by a fixed "blurred intensity" predictor (a Gaussian of 1.5 px on
each tile, then a steep sigmoid): on BBBC039's Hoechst fields it gives a realistic nuclei map (F1 0.92
against the manual masks of the first field) and, like a network, it sees tile borders, so the tiling
must match. A trained network is checked in the slow test.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

import stainseg
from stainseg.cli import main
from stainseg.errors import StainsegError
from stainseg.model import Model
from stainseg.preprocess import channel_statistics, prepare
from stainseg.segment.band_prepare import prepare_rows
from stainseg.segment.blockwise import (object_table, predict_overlap_rows, read_blockwise_labels, segment_blockwise,
                                        whole_map_options)
from stainseg.segment.instances import probability_to_labels
from stainseg.segment.rows import open_rows
from stainseg.segment.seeds import distance_map, mask_components, typical_radius

REPO = Path(__file__).resolve().parents[1]


def blurred_intensity(batch: np.ndarray) -> np.ndarray:
    """A stand-in network: (N, 1, t, t) prepared Hoechst -> (N, 2, t, t) probabilities, depending on tile context."""
    blurred = ndi.gaussian_filter(batch, sigma=(0, 0, 1.5, 1.5), mode="reflect")
    p = 1.0 / (1.0 + np.exp(-(blurred - 0.1) * 40.0))
    return np.concatenate([1.0 - p, p], axis=1).astype(np.float32)


def _mosaic(bbbc039: Path, n: int) -> np.ndarray:
    files = sorted((bbbc039 / "images").glob("*.tif"))[: n * n]
    fields = [tifffile.imread(f) for f in files]
    return np.block([[fields[n * i + j] for j in range(n)] for i in range(n)])


def _model(min_size: int | None = 60, min_distance: int | None = 6) -> Model:
    model = Model.new(["DNA"])
    s = model.segment_settings
    s.min_size, s.min_distance, s.dilation = min_size, min_distance, 1
    model.predictor = lambda progress=None: blurred_intensity  # type: ignore[method-assign]
    return model


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _f1(a: np.ndarray, b: np.ndarray) -> float:
    return float(stainseg.evaluate(a, b)["f1"])


# --------------------------------------------------------------------------- preparation


@pytest.mark.data
def test_band_preparation_is_model_prepare_on_a_bbbc039_mosaic(bbbc039):
    """Spline field from the bands' block medians, percentiles and medians from the whole subsample: no band seams."""
    mosaic = _mosaic(bbbc039, 3)
    stats = channel_statistics([mosaic[None].astype(np.float32)])
    model = Model.new(["DNA"])
    for normalization in ("hybrid", "training", "image"):
        model.preprocessing.normalization = normalization
        model.preprocessing.statistics = stats
        whole = model.prepare(mosaic)
        prepared = prepare_rows(open_rows(mosaic, 1), model.preprocessing, band=128)
        bands = np.concatenate([prepared.rows(y, y + 100) for y in range(0, mosaic.shape[0], 100)], axis=1)
        assert np.abs(bands - whole).max() <= 1e-6, normalization
    model.preprocessing.illumination = "none"
    assert np.array_equal(prepare_rows(open_rows(mosaic, 1), model.preprocessing, band=96).rows(0, mosaic.shape[0]), model.prepare(mosaic))


def test_band_preparation_of_a_strongly_vignetted_float_stack():
    """Two planes, float input, a field that dips below 0.1 at a corner (clamped and re-scaled over the whole image)."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:700, 0:900]
    light = np.exp(-(((yy - 80) / 260.0) ** 2 + ((xx - 90) / 300.0) ** 2) * 3)
    stack = np.stack([rng.gamma(4.0, 30.0, (700, 900)) * light, rng.gamma(2.0, 80.0, (700, 900)) * (0.5 + light)])
    settings = Model.new(["a", "b"]).preprocessing
    whole = prepare(stack.astype(np.float32), settings)
    bands = prepare_rows(open_rows(stack, 2), settings, band=64)
    assert any(plane.clamp_mean is not None for plane in bands.planes)  # the clamped branch is exercised
    assert np.abs(bands.rows(0, 700) - whole).max() < 1e-5
    assert np.array_equal(bands[:, 100:200], bands.rows(100, 200))


def test_rows_of_tiff_layouts_and_zarr(tmp_path):
    import zarr

    stack = np.random.default_rng(0).integers(0, 60000, (3, 130, 150)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")  # contiguous: plain file reads
    tifffile.imwrite(tmp_path / "tiled.tif", stack, photometric="minisblack", compression="zlib", tile=(32, 32))  # zarr store
    tifffile.imwrite(tmp_path / "rgb.tif", np.moveaxis(stack, 0, -1), photometric="rgb")
    z = zarr.open_array(str(tmp_path / "tczyx.zarr"), mode="w", shape=(1, 3, 1, 130, 150), chunks=(1, 1, 1, 64, 64),
                        dtype="u2", zarr_format=2)
    z[:] = stack[None, :, None]
    for name in ("plain.tif", "tiled.tif", "rgb.tif", "tczyx.zarr"):
        with open_rows(tmp_path / name, 3) as rows:
            assert rows.shape == (3, 130, 150)
            assert np.array_equal(rows.rows(17, 90), stack[:, 17:90]), name
    with pytest.raises(StainsegError, match=r"plain\.tif: image has shape \(3, 130, 150\).*model's 2 input"):
        open_rows(tmp_path / "plain.tif", 2)


# --------------------------------------------------------------------------- inference and instances


def test_streamed_overlap_tiles_are_the_whole_image_tiles():
    from stainseg.segment.tiling import predict_overlap

    image = np.random.default_rng(1).random((2, 530, 610), dtype=np.float32)
    out = np.zeros((2, 530, 610), np.float32)

    def predictor(x: np.ndarray) -> np.ndarray:
        return ndi.uniform_filter(x, size=(1, 1, 5, 5), mode="reflect")

    predict_overlap_rows(image, predictor, out, tile_size=160, overlap=24, batch_size=3)
    assert np.array_equal(out, predict_overlap(image, predictor, tile_size=160, overlap=24))


@pytest.mark.data
def test_missing_instance_settings_come_from_the_whole_map(bbbc039):
    """An untrained model has no min_size / min_distance: they are derived from the whole map, as for one image."""
    mosaic = _mosaic(bbbc039, 2)
    prob = blurred_intensity(Model.new(["DNA"]).prepare(mosaic)[None])[0]
    options = {"threshold": 0.5, "min_size": None, "min_distance": None, "min_depth": None, "smoothing": None, "dilation": 1}
    got = whole_map_options(prob, options, band=200, margin=96)
    mask = prob[1] > 0.5
    assert got["min_distance"] == max(2, int(round(0.6 * typical_radius(distance_map(mask, mask_components(mask)), mask))))
    sizes = np.bincount(probability_to_labels(prob, 0.5, 1, 1, got["min_distance"]).ravel())[1:]
    assert got["min_size"] == max(4, int(0.1 * np.median(sizes[sizes > 0])))


@pytest.mark.data
def test_blockwise_gives_the_objects_of_model_run_on_a_bbbc039_mosaic(bbbc039, tmp_path):
    """A 4 x 4 mosaic of real fields (2080 x 2784), 9 bands of 256 rows: the objects of Model.run."""
    mosaic = _mosaic(bbbc039, 4)
    tifffile.imwrite(tmp_path / "mosaic.tif", mosaic)
    model = _model()
    whole = model.run(mosaic)
    result = segment_blockwise(model, tmp_path / "mosaic.tif", tmp_path / "out", band=256)
    labels = np.asarray(read_blockwise_labels(result.labels_path))
    assert labels.shape == mosaic.shape and result.objects == int(labels.max()) > 1000
    assert _f1(whole["labels"], labels) >= 0.99
    assert abs(result.objects - int(whole["labels"].max())) <= 0.01 * result.objects
    # the object table: the whole-image table's values for the same objects
    from stainseg.stages.segment import cell_table

    table = {(r["area"], r["centroid_y"], r["centroid_x"]): r["mean_DNA"] for r in cell_table("m", whole["labels"], whole["stack"], ["DNA"], None)}
    same = [r for r in result.cells if (r["area"], r["centroid_y"], r["centroid_x"]) in table]
    assert len(same) >= 0.99 * len(result.cells)
    assert all(abs(r["mean_DNA"] - table[(r["area"], r["centroid_y"], r["centroid_x"])]) < 1e-2 for r in same)
    assert sorted((tmp_path / "out").iterdir()) == [tmp_path / "out" / "labels"]  # the temporary probabilities are gone


@pytest.mark.data
def test_untrained_model_blockwise_equals_model_run(bbbc039, tmp_path):
    mosaic = _mosaic(bbbc039, 2)
    model = _model(min_size=None, min_distance=None)
    result = segment_blockwise(model, mosaic, tmp_path, name="m", band=160, margin=96)
    assert result.settings["min_size"] is not None and result.settings["min_distance"] is not None
    assert _f1(model.segment(mosaic), np.asarray(read_blockwise_labels(result.labels_path))) >= 0.99


# --------------------------------------------------------------------------- the command line


@pytest.fixture()
def blurred_model(tmp_path, monkeypatch):
    """Two copies of one model folder: the default budget, and a budget of 1000 x 1000 px (the stand-in network for both)."""
    monkeypatch.setattr(Model, "predictor", lambda self, progress=None: blurred_intensity)
    model = _model()
    small = model.save(tmp_path / "model_whole", onnx=False)
    model.segment_settings.blockwise_pixels = 1000 * 1000
    big = model.save(tmp_path / "model_blockwise", onnx=False)
    return small, big


def _image(tmp_path: Path) -> Path:
    from conftest import SHARED_DATA

    if (SHARED_DATA / "bbbc039").is_dir():
        image = _mosaic(SHARED_DATA / "bbbc039", 2)  # 1040 x 1392: above 1000 x 1000
    else:
        from skimage.draw import disk

        rng = np.random.default_rng(0)
        image = rng.normal(150, 8, (1040, 1392))
        for _ in range(300):
            image[disk(tuple(rng.integers(15, 1025, 2)), rng.uniform(7, 11), shape=image.shape)] += 900
        image = image.astype(np.uint16)
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, image)
    return path


def test_the_command_takes_the_blockwise_route_above_the_budget(blurred_model, tmp_path, capsys):
    import ome_zarr.io
    import ome_zarr.reader

    small, big = blurred_model
    image = _image(tmp_path)
    assert main(["segment", str(small), str(image), "-o", str(tmp_path / "whole")]) == 0
    assert main(["segment", str(big), str(image), "-o", str(tmp_path / "bands")]) == 0
    out = tmp_path / "bands"
    row = _csv(out / "index.csv")[0]
    assert row["blockwise"] == "True" and row["label_file"].endswith("labels/mosaic.ome.zarr") and row["shape"] == "1040x1392"
    assert not (out / "labels" / "mosaic.tif").exists() and (tmp_path / "whole" / "labels" / "mosaic.tif").exists()
    # a valid OME-Zarr multiscale image of uint32 label ids, readable by ome-zarr
    nodes = list(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(out / "labels" / "mosaic.ome.zarr")))())
    pyramid = nodes[0].data
    assert [tuple(level.shape) for level in pyramid] == [(1040, 1392), (520, 696), (260, 348)]
    labels = np.asarray(pyramid[0])
    assert labels.dtype == np.uint32 and np.array_equal(np.asarray(pyramid[1]), labels[::2, ::2])
    from stainseg.io.images import read_labels

    whole = read_labels(tmp_path / "whole" / "labels" / "mosaic.tif")
    assert int(whole.max()) > 100 and _f1(whole, labels) >= 0.99
    cells = _csv(out / "cells.csv")
    assert abs(len(cells) - int(whole.max())) <= 0.01 * len(cells) and int(row["cells"]) == len(cells)
    # --resume finds the finished block-wise image and does not segment it again
    before = (out / "records" / "mosaic.json").stat().st_mtime_ns
    assert main(["segment", str(big), str(image), "-o", str(out), "--resume"]) == 0
    assert (out / "records" / "mosaic.json").stat().st_mtime_ns == before


def test_a_zarr_input_is_always_segmented_blockwise(blurred_model, tmp_path):
    import zarr

    small, _ = blurred_model
    image = tifffile.imread(_image(tmp_path))[:300, :400]
    z = zarr.open_array(str(tmp_path / "small.zarr"), mode="w", shape=image.shape, chunks=(128, 128), dtype="u2", zarr_format=2)
    z[:] = image
    assert main(["segment", str(small), str(tmp_path / "small.zarr"), "-o", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "records" / "small.json").read_text())
    assert record["blockwise"] and np.asarray(read_blockwise_labels(record["label_file"])).shape == (300, 400)


def test_a_failed_run_leaves_no_half_written_output(blurred_model, tmp_path, monkeypatch):
    import stainseg.segment.instances as instances

    _, big = blurred_model
    image = _image(tmp_path)
    real = instances.labels_blockwise

    def fails_after_one_band(prob, out, band, margin, **options):
        real(prob[:, :band + margin], out, band, margin, **options)  # something is written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(instances, "labels_blockwise", fails_after_one_band)
    out = tmp_path / "out"
    assert main(["segment", str(big), str(image), "-o", str(out)]) == 1
    assert list((out / "labels").iterdir()) == []
    assert not (out / "records" / "mosaic.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary probabilities either
    assert json.loads((out / "run.json").read_text())["failed"][0]["image"] == "mosaic"


_STALL = """
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[4])
import stainseg.segment.instances as instances
from stainseg.model import Model
from test_blockwise import blurred_intensity
Model.predictor = lambda self, progress=None: blurred_intensity

def stalls(prob, out, band, margin, **options):
    out[0:16] = 7  # half of the label image is written
    Path(sys.argv[3]).write_text("stalled")
    time.sleep(300)

instances.labels_blockwise = stalls
from stainseg.cli import main
main(["segment", sys.argv[1], sys.argv[2], "-o", sys.argv[5]])
"""


def test_a_killed_run_leaves_no_half_written_output_and_the_next_run_cleans_up(blurred_model, tmp_path):
    _, big = blurred_model
    image = _image(tmp_path)
    out, marker = tmp_path / "out", tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-c", _STALL, str(big), str(image), str(marker), str(REPO / "tests"), str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), child.stderr.read().decode()[-2000:] if child.poll() is not None else "no stall in 60 s"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    labels = out / "labels"
    assert not (labels / "mosaic.ome.zarr").exists() and not (out / "records" / "mosaic.json").exists()
    assert [p.name.endswith(".tmpdir") for p in labels.iterdir()] == [True]  # hidden, under a temporary name
    assert main(["segment", str(big), str(image), "-o", str(out), "--resume"]) == 0
    assert sorted(p.name for p in labels.iterdir()) == ["mosaic.ome.zarr"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert int(np.asarray(read_blockwise_labels(labels / "mosaic.ome.zarr")).max()) > 100


# --------------------------------------------------------------------------- errors and the slow check


def test_bad_inputs_are_one_line_errors(tmp_path):
    from stainseg.groundtruth.extent import CellExtent

    tifffile.imwrite(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint16))
    with pytest.raises(StainsegError, match=r"two\.tif: image has shape \(2, 64, 64\)") as err:
        segment_blockwise(Model.new(["DNA"]), tmp_path / "two.tif", tmp_path / "out")
    assert "\n" not in str(err.value)
    model = Model.new(["phase"], objects="cells")
    model.cell_extent = CellExtent()
    with pytest.raises(StainsegError, match="cells grown from nuclei is not supported"):
        segment_blockwise(model, tmp_path / "two.tif", tmp_path / "out")
    nan = np.ones((64, 64), np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(StainsegError, match=r"nan\.tif: image contains NaN"):
        segment_blockwise(Model.new(["DNA"]), tmp_path / "nan.tif", tmp_path / "out")
    assert not (tmp_path / "out" / "labels" / "nan.ome.zarr").exists()


def test_object_table_sums_across_bands():
    labels = np.zeros((50, 40), np.uint32)
    labels[5:30, 3:9] = 1  # crosses two bands of 16 rows
    labels[40:45, 20:40] = 2
    image = np.arange(2000, dtype=np.float32).reshape(50, 40)
    from stainseg.stages.segment import cell_table

    assert object_table("x", labels, open_rows(image), ["DNA"], 2, band=16) == cell_table("x", labels, image[None], ["DNA"], None)


@pytest.mark.slow
@pytest.mark.data
def test_a_trained_model_gives_the_same_objects_blockwise(bbbc039, tmp_path):
    """A network trained on BBBC039 crops (30 iterations), 4 x 4 mosaic, 256-row bands: F1 >= 0.99 against Model.run."""
    files = sorted((bbbc039 / "images").glob("*.tif"))[20:23]
    crops = [tifffile.imread(f)[100:356, 100:356] for f in files]
    model = stainseg.train(crops, [stainseg.automatic_labels(nuclei=c) for c in crops], out=tmp_path / "model",
                           iterations=30, crop_size=64, progress=False, seed=3)
    mosaic = _mosaic(bbbc039, 4)
    tifffile.imwrite(tmp_path / "mosaic.tif", mosaic)
    model = Model.load(tmp_path / "model")
    whole = model.segment(mosaic)
    result = segment_blockwise(model, tmp_path / "mosaic.tif", tmp_path / "out", band=256)
    assert _f1(whole, np.asarray(read_blockwise_labels(result.labels_path))) >= 0.99


@pytest.mark.data
def test_kept_probabilities_and_uncertainty_are_the_whole_image_maps(bbbc039, tmp_path):
    """--save-probability / --save-uncertainty: zarr maps equal to Model.run's (the paper's two-pass tiles for the uncertainty)."""
    import zarr

    mosaic = _mosaic(bbbc039, 2)[:700, :900]
    model = _model()
    whole = model.run(mosaic, tiling="tiles", two_pass=True)
    result = segment_blockwise(model, mosaic, tmp_path, name="m", band=200, save_probability=True, save_uncertainty=True)
    assert result.probability_path == tmp_path / "probability" / "m.zarr"
    assert np.abs(np.asarray(zarr.open_array(str(result.probability_path), mode="r")) - whole["probability"]).max() < 1e-5
    assert np.abs(np.asarray(zarr.open_array(str(result.uncertainty_path), mode="r")) - whole["uncertainty"]).max() < 1e-5
    assert _f1(whole["labels"], np.asarray(read_blockwise_labels(result.labels_path))) >= 0.99
    assert all("uncertainty" in row for row in result.cells)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "probability", "uncertainty"]
