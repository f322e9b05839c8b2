"""The report's pieces on real images: the leading result figure, box plots only where a site has
several images, and the demo's real section (rendered from its files, no training)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stainseg
from stainseg.data import isl_sample
from stainseg.report import figures
from stainseg.report.html import _evaluation_section, _real_section


@pytest.fixture(scope="module")
def isl() -> dict:
    """The bundled real crop with its automatic DAPI labels."""
    sample = isl_sample([2, 6, 10])
    sample["labels"] = stainseg.automatic_labels(nuclei=sample["dapi"])
    return sample


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_lead_figure_whole_view_and_full_resolution_crops(isl: dict) -> None:
    plane, labels = isl["phase"][1], isl["labels"]
    assert 20 <= labels.max() <= 80  # the crop's nuclei (a dense cluster and a few alone)
    whole, crops = figures.result_views(plane, labels, crop=128, zoom=2)
    assert _size(whole) == (512, 384)  # 1024 px would exceed the page: the whole view at 1:1
    assert len(crops) == 3
    for png, (y, x) in crops:
        assert _size(png) == (256, 256)  # 128 px enlarged 2x, pixel for pixel
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert np.array_equal(pixels[::2, ::2], pixels[1::2, 1::2])  # no smoothing: each pixel doubled
    # the crops show where the nuclei are: together they hold most of them
    ids = np.unique(labels[labels > 0])
    cy = np.array([np.mean(np.nonzero(labels == i)[0]) for i in ids])
    cx = np.array([np.mean(np.nonzero(labels == i)[1]) for i in ids])
    shown = np.zeros(len(ids), bool)
    for _, (y, x) in crops:
        shown |= (cy >= y) & (cy < y + 128) & (cx >= x) & (cx < x + 128)
    assert shown.mean() >= 0.6
    # yellow outlines are drawn on the nuclei of the crops
    first = np.asarray(Image.open(io.BytesIO(crops[0][0])).convert("RGB")).astype(int)
    yellow = (first[..., 0] > 200) & (first[..., 1] > 180) & (first[..., 2] < 60)
    assert 0.01 < yellow.mean() < 0.5


def test_box_plots_only_where_a_site_has_several_images(isl: dict, tmp_path: Path) -> None:
    from stainseg.evaluate.batch import evaluate_arrays
    from stainseg.stages.evaluate import write_evaluation

    labels = isl["labels"]
    parts = {f"img{i}": (labels[:, i * 128:(i + 1) * 128], labels[:, i * 128:(i + 1) * 128]) for i in range(4)}
    for name, groups in (("one", {n: n for n in parts}), ("several", {n: "site1" if n < "img2" else "site2" for n in parts})):
        out = tmp_path / name
        write_evaluation(evaluate_arrays(parts, group_by=groups), out / "evaluation" / "cpgt", name="cpgt")
        html = _evaluation_section(out)
        assert "Accuracy on held-out sites" in html
        assert ("box plot" in html) == (name == "several"), name


def test_real_section_shows_phase_with_both_outlines_and_the_scores(isl: dict, tmp_path: Path) -> None:
    """Rendered from the files the demo writes (here the DAPI labels stand in for the network's)."""
    from stainseg.io.images import write_image, write_labels
    from skimage.segmentation import relabel_sequential

    folder = tmp_path / "real"
    folder.mkdir()
    labels = isl["labels"]
    test = relabel_sequential(labels[:, 256:])[0]
    write_image(folder / "phase.tif", isl["phase"])
    write_labels(folder / "dapi_labels.tif", labels)
    write_labels(folder / "network_labels.tif", test)
    scores = stainseg.evaluate(test, test)
    record = {"data": isl["citation"], "crop": "384 x 512 px", "input_planes": ["phase_z02", "phase_z06", "phase_z10"],
              "split": "columns", "train_part": [[0, 384], [0, 256]], "test_part": [[0, 384], [256, 512]], "train_objects": int(labels[:, :256].max() > 0),
              "test_objects": int(test.max()), "predicted_objects": int(test.max()), "iterations": 300,
              "scores": {k: scores[k] for k in ("percent_f_above", "f1", "n_truth", "n_pred")}, "seconds": {"train": 10.0}}
    (folder / "result.json").write_text(json.dumps(record))
    html = _real_section(tmp_path)
    assert "Real phase contrast" in html and "Christiansen" in html and "Apache" in html
    assert "100.0 %" in html and "F1@IoU0.5 <span class='big'>1.00" in html
    assert "yellow" in html and "cyan" in html and "phase_z06" in html
    assert html.count("data:image/png;base64,") >= 5  # whole held-out view, 3 crops, the split picture
