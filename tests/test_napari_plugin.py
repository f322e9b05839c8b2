"""napari plugin: manifest, reader, and both widgets in a headless viewer (skipped without napari).

The widget functions in ``stainseg.napari.core`` are tested without Qt as well, so the main
environment (no napari) still checks what the widgets compute.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from stainseg.config import ChannelsConfig, ExperimentConfig, ModelConfig, SegmentConfig
from stainseg.errors import StainsegError
from stainseg.io.atomic import write_csv
from stainseg.io.images import write_labels
from stainseg.model import Model
from stainseg.napari.core import automatic_labels, segment_layers
from stainseg.napari.reader import get_reader, label_files, read_stainseg
from stainseg.network import StainNet

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "stainseg" / "napari" / "napari.yaml"


def nuclei_image(shape=(128, 160), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A nuclear stain with separated bright disks on a smooth, uneven background, and its true labels."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    k = 0
    for cy in range(16, shape[0] - 12, 30):
        for cx in range(16, shape[1] - 12, 30):
            k += 1
            rr, cc = disk((cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)), rng.uniform(7, 10), shape=shape)
            truth[rr, cc] = k
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = 200 + 0.3 * xx + 800 * (truth > 0) + rng.normal(0, 15, shape)
    return image.astype(np.float32), truth


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder with random weights (plumbing: the widget runs the real segmentation code)."""
    cfg = ExperimentConfig(name="t", root=".", pattern=r"(?P<channel>[A-Za-z]+)\.tif", channels=ChannelsConfig(input=["DNA"], nuclei="Hoechst"),
                           model=ModelConfig(in_channels=1), segment=SegmentConfig(tile_size=64, device="cpu"))
    cfg.groundtruth.illumination = "none"
    return Model.new(["DNA"], cfg=cfg).save(tmp_path_factory.mktemp("model"))


@pytest.fixture()
def segment_out(tmp_path) -> Path:
    _, truth = nuclei_image()
    write_labels(tmp_path / "labels" / "A01_s1.tif", truth)
    write_labels(tmp_path / "labels" / "A01_s2.tif", truth[::-1])
    write_csv(tmp_path / "index.csv", [{"name": "A01_s1", "cells": int(truth.max())}, {"name": "A01_s2", "cells": int(truth.max())}])
    return tmp_path


# ------------------------------------------------------------------ without Qt

def test_reader_reads_folder_index_and_single_file(segment_out):
    assert get_reader(str(segment_out)) is read_stainseg
    assert get_reader(str(segment_out / "index.csv")) is read_stainseg
    assert get_reader(str(segment_out / "labels" / "A01_s1.tif")) is read_stainseg
    assert get_reader(str(segment_out / "cells.csv")) is None
    layers = read_stainseg(segment_out)
    assert [meta["name"] for _, meta, _ in layers] == ["A01_s1", "A01_s2"]
    assert all(kind == "labels" for _, _, kind in layers)
    _, truth = nuclei_image()
    np.testing.assert_array_equal(layers[0][0], truth)
    assert len(label_files(segment_out / "labels" / "A01_s2.tif")) == 1


def test_reader_refuses_other_files(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    assert get_reader(str(tmp_path / "a.tif")) is None
    with pytest.raises(StainsegError, match="not a stainseg output"):
        read_stainseg(tmp_path)


def test_automatic_labels_find_the_nuclei():
    image, truth = nuclei_image()
    labels, qc = automatic_labels(image, objects="nuclei", illumination="spline")
    assert labels.shape == image.shape
    assert int(labels.max()) == int(truth.max())
    overlap = np.logical_and(labels > 0, truth > 0).sum() / np.logical_or(labels > 0, truth > 0).sum()
    assert overlap > 0.8
    assert qc["n_nuclei"] == int(truth.max())


def test_segment_layers_runs_the_model(model_dir):
    image, _ = nuclei_image()
    seen = []
    labels = segment_layers(model_dir, [image], tile_size=64, progress=seen.append)
    assert labels.shape == image.shape and np.issubdtype(labels.dtype, np.integer)
    assert seen and seen == sorted(seen)  # tiles done, increasing
    with pytest.raises(StainsegError, match="channel"):
        segment_layers(model_dir, [image, image])
    with pytest.raises(StainsegError, match="model folder"):
        segment_layers("", [image])


# ------------------------------------------------------------------ napari, headless

def _need_napari():
    """napari, or skip: the viewer tests need napari, pytest-qt and an X display (for OpenGL)."""
    napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'stainseg[napari]')")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed (needed for the make_napari_viewer fixture)")
    if not os.environ.get("DISPLAY"):
        # napari's canvas needs OpenGL; Qt 5's offscreen platform has none here, so the viewer tests
        # need an X server: pytest-xvfb starts Xvfb by itself when both are installed (docs/napari.md)
        pytest.skip("no X display for napari's OpenGL canvas: install Xvfb and pytest-xvfb, or run under xvfb-run")
    return napari


#: Tests that take ``qtbot`` need this too: pytest-qt's session-scoped ``qapp`` is made before
#: ``make_viewer`` can skip, and Qt aborts the whole run when it finds no display.
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="no X display for Qt: install Xvfb and "
                                   "pytest-xvfb, or run under xvfb-run")


@pytest.fixture()
def make_viewer(request):
    """napari's ``make_napari_viewer`` fixture, or a skip when napari cannot run here."""
    _need_napari()
    return request.getfixturevalue("make_napari_viewer")


def test_manifest_is_valid_and_points_at_real_callables():
    pytest.importorskip("npe2", reason="npe2 is not installed (pip install 'stainseg[napari]')")
    _need_napari()
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "stainseg"
    ids = {c.id: c.python_name for c in manifest.contributions.commands}
    assert set(ids) == {"stainseg.get_reader", "stainseg.segment_widget", "stainseg.groundtruth_widget"}
    import importlib

    for python_name in ids.values():
        module, attr = python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def _register_manifest():
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    if "stainseg" not in pm._manifests:  # an editable install made before the entry point existed
        pm.register(PluginManifest.from_file(MANIFEST))
    return pm


def test_viewer_opens_segment_output_with_our_reader(make_viewer, segment_out):
    _register_manifest()
    viewer = make_viewer()
    layers = viewer.open(str(segment_out), plugin="stainseg")
    assert [layer.name for layer in layers] == ["A01_s1", "A01_s2"]
    assert all(isinstance(layer, _need_napari().layers.Labels) for layer in layers)


@needs_display
def test_segment_widget_adds_labels_layer_from_worker(make_viewer, model_dir, qtbot):
    from stainseg.napari.widgets import SegmentWidget

    viewer = make_viewer()
    image, _ = nuclei_image()
    viewer.add_image(image, name="DNA")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_dir.value = str(model_dir)
    assert "1 input(s): DNA" in widget.status.value
    widget.images.value = [viewer.layers["DNA"]]
    widget.tile_size.value = 64
    ticks = []
    worker = widget.run()
    worker.yielded.connect(ticks.append)
    # wait for the outcome, not for the finished signal: a worker may finish before a wait is connected
    qtbot.waitUntil(lambda: "DNA stainseg" in [layer.name for layer in viewer.layers], timeout=60_000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5_000)
    layer = viewer.layers["DNA stainseg"]
    assert isinstance(layer, _need_napari().layers.Labels) and layer.data.shape == image.shape
    np.testing.assert_array_equal(layer.data, segment_layers(model_dir, [image], tile_size=64))
    assert ticks and widget.run_button.enabled


@needs_display
def test_segment_widget_reports_bad_model_in_status(make_viewer, tmp_path, qtbot):
    from stainseg.napari.widgets import SegmentWidget

    viewer = make_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="BF")
    widget = SegmentWidget(viewer)
    widget.model_dir.value = str(tmp_path)
    widget.images.value = [viewer.layers["BF"]]
    assert widget.run() is not None
    # a missing model fails at once, often before a wait on the finished signal could be connected
    qtbot.waitUntil(lambda: "missing from the model folder" in widget.status.value, timeout=30_000)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=5_000)
    assert len(viewer.layers) == 1


def test_groundtruth_widget_makes_labels_layer(make_viewer):
    _register_manifest()
    viewer = make_viewer()
    image, truth = nuclei_image()
    viewer.add_image(image, name="Hoechst")
    _, widget = viewer.window.add_plugin_dock_widget("stainseg", "Automatic labels from a stain")
    widget.nuclei.value = viewer.layers["Hoechst"]
    widget()
    layer = viewer.layers["Hoechst automatic nuclei"]
    assert isinstance(layer, _need_napari().layers.Labels)
    assert int(layer.data.max()) == int(truth.max())
