"""Tests of the evaluate stage: real BBBC039 manual masks, files paired by name, outputs, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.morphology import disk, erosion

from stainseg.errors import StainsegError
from stainseg.stages.evaluate import (
    evaluate_arrays,
    evaluate_folders,
    image_groups,
    label_stem,
    pair_label_files,
)
from stainseg.io.atomic import read_csv
from stainseg.io.images import read_labels, write_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WELL = r"_(?P<well>[A-P]\d{2})_s"


def _masks(bbbc039: Path, n: int = 3) -> list[Path]:
    masks = sorted((bbbc039 / "masks").glob("*.png"))[:n]
    if len(masks) < n:
        pytest.skip("fewer BBBC039 masks than needed")
    return masks


def _eroded(labels: np.ndarray, radius: int = 2) -> np.ndarray:
    """Every object shrunk by ``radius`` px (grey erosion keeps labels; touching borders open up)."""
    return erosion(labels, disk(radius))


def _synthetic(seed: int = 0, shape=(60, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for value in rng.choice(np.arange(1, 500), 8, replace=False):
        cy, cx, r = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8), rng.uniform(4, 8)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return labels


# ---------------------------------------------------------------- real data

def test_real_masks_against_themselves_and_eroded(bbbc039, tmp_path):
    masks = _masks(bbbc039)
    truth_dir, self_dir, eroded_dir = tmp_path / "truth", tmp_path / "self", tmp_path / "eroded"
    truth_dir.mkdir()
    n_objects = 0
    for mask in masks:
        shutil.copy(mask, truth_dir / mask.name)  # colour PNG masks as distributed
        labels = read_labels(mask)
        n_objects += int(np.unique(labels).size - 1)
        write_labels(self_dir / f"{mask.stem}.tif", labels)
        write_labels(eroded_dir / f"{mask.stem}.tif", _eroded(labels))

    perfect = evaluate_folders(truth_dir, self_dir, tmp_path / "out_self", group_by=WELL)
    overall = perfect["overall"]
    assert overall["n_images"] == 3 and overall["n_truth"] == n_objects == overall["n_pred"]
    assert overall["percent_f_above"] == 100.0 and overall["median_f"] == 1.0
    assert overall["ap"] == overall["f1"] == overall["mean_ap"] == 1.0

    worse = evaluate_folders(truth_dir, eroded_dir, tmp_path / "out_eroded", group_by=WELL)["overall"]
    assert worse["n_truth"] == n_objects
    assert worse["median_f"] < 1.0 and worse["mean_f"] < overall["mean_f"]
    assert worse["mean_ap"] < 1.0
    # a 2-px erosion of ~20-px-wide nuclei keeps most above F 0.6 / IoU 0.5 but almost none at IoU 0.9
    assert worse["percent_f_above"] > 80.0 and worse["ap"] > 0.8
    sweep = worse["iou_sweep"]
    assert sweep["ap"][-1] < 0.1 and np.all(np.diff(sweep["ap"]) <= 1e-12)

    # outputs
    out = tmp_path / "out_eroded"
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert set(metrics["images"]) == {m.stem for m in masks}
    assert metrics["overall"]["percent_f_above"] == pytest.approx(worse["percent_f_above"])
    for group, summary in metrics["groups"].items():
        assert all(metrics["images"][name]["group"] == group for name in summary["images"])
    rows = read_csv(out / "per_object.csv")
    assert len(rows) == n_objects
    assert list(rows[0]) == ["image", "group", "truth_label", "fscore", "best_pred_label", "iou"]
    fs = np.array([float(r["fscore"]) for r in rows])
    assert 100.0 * np.mean(fs >= 0.6) == pytest.approx(worse["percent_f_above"])
    for name in ("fscore_curve.png", "boxplot.png", "ap_iou.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and (out / name).stat().st_size > 5000
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_evaluate_arrays_on_real_masks(bbbc039):
    labels = read_labels(_masks(bbbc039, 1)[0])
    result = evaluate_arrays({"same": (labels, labels), "eroded": (labels, _eroded(labels, 3))})
    assert result["images"]["same"]["percent_f_above"] == 100.0
    assert result["images"]["eroded"]["median_f"] < result["images"]["same"]["median_f"]
    assert result["overall"]["n_truth"] == 2 * (np.unique(labels).size - 1)
    assert set(result["groups"]) == {"all"}


# ---------------------------------------------------------------- pairing, grouping, errors (synthetic)

def test_unpaired_files_are_reported(tmp_path):
    truth = _synthetic(1)
    for stem in ("a", "b", "extra_truth"):
        write_labels(tmp_path / "truth" / f"{stem}.tif", truth)
    for stem in ("a", "b", "extra_pred"):
        write_labels(tmp_path / "pred" / "labels" / f"{stem}.tif", truth)  # segment's OUT/labels layout
    result = evaluate_folders(tmp_path / "truth", tmp_path / "pred", tmp_path / "out")
    assert set(result["images"]) == {"a", "b"}
    assert result["unpaired"]["truth_only"] == 1 and result["unpaired"]["pred_only"] == 1
    assert result["unpaired"]["truth_only_examples"] == ["extra_truth"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["unpaired"]["pred_only_examples"] == ["extra_pred"]


def test_no_matching_names_is_one_line_error(tmp_path):
    write_labels(tmp_path / "truth" / "a.tif", _synthetic())
    write_labels(tmp_path / "pred" / "b.tif", _synthetic())
    with pytest.raises(StainsegError, match="no file names match") as err:
        evaluate_folders(tmp_path / "truth", tmp_path / "pred", tmp_path / "out")
    assert "\n" not in str(err.value)
    with pytest.raises(StainsegError, match="not found"):
        pair_label_files(tmp_path / "missing", tmp_path / "pred")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StainsegError, match="no label images"):
        pair_label_files(tmp_path / "empty", tmp_path / "pred")


def test_shape_mismatch_names_both_files(tmp_path):
    write_labels(tmp_path / "truth" / "img1.tif", _synthetic(shape=(60, 80)))
    write_labels(tmp_path / "pred" / "img1.tif", _synthetic(shape=(60, 81)))
    with pytest.raises(StainsegError) as err:
        evaluate_folders(tmp_path / "truth", tmp_path / "pred", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "shape" in message
    assert str(tmp_path / "truth" / "img1.tif") in message and str(tmp_path / "pred" / "img1.tif") in message
    assert not (tmp_path / "out" / "metrics.json").exists()
    with pytest.raises(StainsegError, match="img1"):
        evaluate_arrays({"img1": (np.zeros((4, 4), int), np.zeros((4, 5), int))})


def test_duplicate_stems_are_an_error(tmp_path):
    write_labels(tmp_path / "truth" / "a.tif", _synthetic())
    write_labels(tmp_path / "truth" / "a.tiff", _synthetic())
    write_labels(tmp_path / "pred" / "a.tif", _synthetic())
    with pytest.raises(StainsegError, match="share the name"):
        pair_label_files(tmp_path / "truth", tmp_path / "pred")


def test_image_groups():
    names = ["IXMtest_A06_s6_w1X", "IXMtest_B13_s1_w1Y", "other"]
    assert image_groups(names) == dict.fromkeys(names, "all")
    assert image_groups(names, WELL) == {names[0]: "A06", names[1]: "B13", "other": "ungrouped"}
    assert image_groups(names, r"_(?P<well>[A-P]\d{2})_s(?P<site>\d+)")[names[0]] == "A06_6"
    assert image_groups(names, {names[0]: "x"}) == {names[0]: "x", names[1]: "ungrouped", "other": "ungrouped"}
    assert image_groups(names, len)["other"] == "5"
    with pytest.raises(StainsegError, match="regular expression"):
        image_groups(names, "(")


def test_groups_summarise_their_images():
    truth = [_synthetic(s) for s in range(4)]
    pairs = {f"w{i % 2}_s{i}": (t, _eroded(t, 1 + i)) for i, t in enumerate(truth)}
    result = evaluate_arrays(pairs, group_by=lambda name: name.split("_")[0])
    assert set(result["groups"]) == {"w0", "w1"}
    g0 = result["groups"]["w0"]
    assert g0["images"] == ["w0_s0", "w0_s2"] and g0["n_images"] == 2
    per_image = [result["images"][n]["percent_f_above"] for n in g0["images"]]
    assert g0["per_image_percent_f_above"]["min"] == min(per_image)
    assert g0["per_image_percent_f_above"]["max"] == max(per_image)
    assert g0["n_truth"] == sum(result["images"][n]["n_truth"] for n in g0["images"])


def test_label_stem():
    assert label_stem("x/IXMtest_A06_s6.png") == "IXMtest_A06_s6"
    assert label_stem("a.ome.tif") == "a" and label_stem("b.TIFF") == "b"
