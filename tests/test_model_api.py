"""The Python front door and stainseg.Model: one preprocessing for training and segmentation, one path
from raw planes to labels (Python, CLI, napari), exact round trips, quality flags, runnable docstrings."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

import stainseg
from stainseg.cli import main


def _fields(shared_data: Path | None, n: int = 3, size: int = 192) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real BBBC039 crops (raw uint16) with automatic labels from the same stain; synthetic blobs without the data."""
    images = []
    if shared_data is not None and (shared_data / "bbbc039" / "images").is_dir():  # noqa: SIM102
        for path in sorted((shared_data / "bbbc039" / "images").iterdir())[:n]:
            images.append(tifffile.imread(path)[100:100 + size, 200:200 + size])
    else:
        from skimage.draw import disk

        rng = np.random.default_rng(0)
        for _ in range(n):
            img = rng.normal(150, 8, (size, size))
            for _ in range(12):
                img[disk(tuple(rng.integers(15, size - 15, 2)), rng.uniform(7, 11), shape=img.shape)] += rng.uniform(600, 1200)
            images.append(img.astype(np.uint16))
    labels = [stainseg.automatic_labels(nuclei=im) for im in images]
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import SHARED_DATA  # real data beside the repo when present; synthetic fields otherwise

    shared = SHARED_DATA if SHARED_DATA.is_dir() else None
    images, labels = _fields(shared)
    out = tmp_path_factory.mktemp("api") / "MODEL"
    model = stainseg.train(images[:2], labels[:2], out=out, iterations=30, crop_size=64, progress=False, seed=3)
    return {"model": model, "out": out, "images": images, "labels": labels}


def test_five_lines_of_the_readme_run(trained):
    image = trained["images"][2]
    cells = stainseg.Model.load(trained["out"]).segment(image)
    assert cells.shape == image.shape and cells.dtype.kind in "iu"
    scores = stainseg.evaluate(trained["labels"][2], cells)
    assert {"percent_f_above", "f1", "ap", "n_truth", "n_pred"} <= set(scores)
    assert scores["n_truth"] == int(len(np.unique(trained["labels"][2])) - 1)


def test_training_prepares_images_with_the_saved_models_prepare(trained, tmp_path, monkeypatch):
    """The defect of 0.1: training normalised arrays one way, segmentation another. Now the inputs the loop
    sees are, bit for bit, what the saved model's prepare makes of the raw images."""
    import stainseg.train.loop as loop

    seen = {}
    real_train = loop.train

    def spy(images, *args, **kwargs):
        seen["images"] = [np.array(im) for im in images]
        return real_train(images, *args, **kwargs)

    monkeypatch.setattr(loop, "train", spy)
    raws = trained["images"][:2]
    stainseg.train(raws, trained["labels"][:2], out=tmp_path / "m", iterations=2, crop_size=32, progress=False)
    loaded = stainseg.Model.load(tmp_path / "m")
    for raw, got in zip(raws, seen["images"]):
        np.testing.assert_array_equal(got, loaded.prepare(raw))


def test_save_load_reproduces_probabilities_bit_for_bit(trained, tmp_path):
    model, image = trained["model"], trained["images"][2]
    again = stainseg.Model.load(model.save(tmp_path / "copy"))
    np.testing.assert_array_equal(model.predict_probability(image), again.predict_probability(image))
    assert again.preprocessing == model.preprocessing and again.segment_settings == model.segment_settings
    assert again.derived == json.loads(json.dumps(model.derived))  # derived settings reload identically


def test_cli_python_and_napari_paths_give_identical_labels(trained, tmp_path):
    from stainseg.napari.core import segment_layers

    image = trained["images"][2]
    tifffile.imwrite(tmp_path / "field.tif", image)
    assert main(["segment", str(trained["out"]), str(tmp_path / "field.tif"), "-o", str(tmp_path / "out")]) == 0
    from_cli = tifffile.imread(tmp_path / "out" / "labels" / "field.tif")
    from_python = stainseg.Model.load(trained["out"]).segment(image)
    from_napari = segment_layers(trained["out"], [image])
    np.testing.assert_array_equal(from_cli, from_python)
    np.testing.assert_array_equal(from_napari, from_python)
    np.testing.assert_array_equal(stainseg.segment(trained["out"], tmp_path / "field.tif"), from_python)


def test_settings_are_derived_from_the_labels_and_stored(trained):
    meta = json.loads((trained["out"] / "model.json").read_text())
    derived = meta["derived"]["derived"]
    stats = meta["derived"]["objects"]
    assert derived["min_distance"] >= 2 and derived["min_size"] >= 4 and stats["objects"] > 0
    seg = meta["segment"]
    assert seg["min_distance"] == derived["min_distance"] and 0 < seg["threshold"] < 1 and seg["dilation"] % 2 == 1
    assert meta["preprocessing"]["statistics"][0]["images"] == 2 and meta["quality"]["n_images"] == 2


def test_blank_field_gives_no_cells_and_a_flag(trained, tmp_path):
    model = trained["model"]
    rng = np.random.default_rng(1)
    noise = rng.poisson(140, trained["images"][2].shape).astype(np.uint16)  # camera noise only
    result = model.run(noise)
    assert int(result["labels"].max()) == 0 and "blank" in [f.code for f in result["flags"]]
    tifffile.imwrite(tmp_path / "blank.tif", noise)
    tifffile.imwrite(tmp_path / "field.tif", trained["images"][2])
    assert main(["segment", str(trained["out"]), str(tmp_path / "blank.tif"), str(tmp_path / "field.tif"), "-o", str(tmp_path / "o")]) == 0
    rows = {r["name"]: r for r in __import__("csv").DictReader(open(tmp_path / "o" / "index.csv"))}
    assert rows["blank"]["flags"] == "blank" and rows["blank"]["cells"] == "0" and "blank:" in rows["blank"]["flag_reasons"]
    assert "blank" not in rows["field"]["flags"]
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert set(run["flagged"]) == {"blank"}
    assert main(["segment", str(trained["out"]), str(tmp_path / "blank.tif"), str(tmp_path / "field.tif"), "-o", str(tmp_path / "s"),
                 "--skip-flagged"]) == 0
    skipped = {r["name"]: r for r in __import__("csv").DictReader(open(tmp_path / "s" / "index.csv"))}
    assert skipped["blank"]["skipped"] == "True" and skipped["field"]["skipped"] == "False"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s" / "labels" / "field.tif"), tifffile.imread(tmp_path / "o" / "labels" / "field.tif"))


def test_unknown_override_and_wrong_channels_are_one_line_errors(trained):
    model = trained["model"]
    with pytest.raises(stainseg.StainsegError, match="unknown segmentation setting 'tiles'"):
        model.segment(trained["images"][2], tiles=3)
    with pytest.raises(stainseg.StainsegError, match="2 channel.*expects 1"):
        model.segment(np.stack([trained["images"][2]] * 2))
    with pytest.raises(stainseg.StainsegError, match="NaN"):
        model.segment(np.full((64, 64), np.nan))


@pytest.mark.parametrize("module", ["stainseg", "stainseg.model", "stainseg.api", "stainseg.preprocess", "stainseg.network",
                                    "stainseg.quality", "stainseg.segment.derive", "stainseg.groundtruth.extent"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, globs={"np": np, **vars(mod)})
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module}"
    assert result.attempted > 0
