"""`stainseg evaluate` reads the `labels/<name>.ome.zarr` label images of block-wise `stainseg segment`
as it reads TIFF labels: paired by name, scored the same, and a missing or corrupt store is a one-line
error naming it and the fix.

The block-wise outputs come from the fixtures of tests/test_blockwise.py (its stand-in "blurred
intensity" network, and a model folder whose pixel budget sends a BBBC039 mosaic block-wise).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stainseg.cli import main
from stainseg.errors import StainsegError
from stainseg.io.images import read_labels
from stainseg.io.omezarr import write_plate_labels
from stainseg.segment.blockwise import segment_blockwise
from stainseg.stages.evaluate import evaluate_folders, find_label_files
from test_blockwise import _image, _model, blurred_model  # noqa: F401  (blurred_model is a fixture)


def _first_field(bbbc039: Path) -> tuple[Path, Path]:
    image = sorted((bbbc039 / "images").glob("*.tif"))[0]
    return image, bbbc039 / "masks" / f"{image.stem}.png"


@pytest.fixture()
def field_outputs(bbbc039, tmp_path):
    """One real BBBC039 field segmented twice by the same model: whole (TIFF labels) and block-wise (OME-Zarr)."""
    image, mask = _first_field(bbbc039)
    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(mask, truth / mask.name)
    model = _model()
    result = segment_blockwise(model, image, tmp_path / "bands", band=128)
    tiff = tmp_path / "whole" / "labels" / f"{image.stem}.tif"
    tiff.parent.mkdir(parents=True)
    tifffile.imwrite(tiff, model.segment(tifffile.imread(image)))
    return {"truth": truth, "zarr": result.labels_path, "bands": tmp_path / "bands", "whole": tmp_path / "whole",
            "stem": image.stem, "objects": result.objects}


@pytest.mark.data
def test_blockwise_labels_are_evaluated_as_tiff_labels_are(field_outputs, tmp_path):
    out = field_outputs
    assert out["zarr"].name == f"{out['stem']}.ome.zarr" and out["objects"] > 30
    assert find_label_files(out["bands"]) == {out["stem"]: out["zarr"]}  # OUT is entered, labels/ holds the store
    from_zarr = evaluate_folders(out["truth"], out["bands"], tmp_path / "eval_zarr")
    from_tiff = evaluate_folders(out["truth"], out["whole"], tmp_path / "eval_tiff")
    zarr_overall, tiff_overall = from_zarr["overall"], from_tiff["overall"]
    assert zarr_overall["n_truth"] > 50 and zarr_overall["n_pred"] == out["objects"]
    # the stand-in network on a real Hoechst field: most manual nuclei are found
    assert zarr_overall["f1"] > 0.8 and zarr_overall["percent_f_above"] > 70
    # the block-wise labels of one field are those of the whole-image path, so the scores agree
    assert abs(zarr_overall["f1"] - tiff_overall["f1"]) <= 0.02
    assert abs(zarr_overall["n_pred"] - tiff_overall["n_pred"]) <= 2
    assert from_zarr["unpaired"]["pred_only"] == 0 and (tmp_path / "eval_zarr" / "metrics.json").is_file()


@pytest.mark.data
def test_read_labels_reads_the_store_whole(field_outputs):
    labels = read_labels(field_outputs["zarr"])
    assert labels.shape == (520, 696) and int(labels.max()) == field_outputs["objects"]
    assert labels.dtype == np.uint16  # ids fit: the same narrowing as for a TIFF


def test_the_command_line_evaluates_a_blockwise_segmentation_and_skips_the_plate(blurred_model, tmp_path):  # noqa: F811
    """`stainseg segment` above the budget writes labels/<name>.ome.zarr (and, with --format ome-zarr, the plate
    labels.ome.zarr beside labels/); `stainseg evaluate --pred OUT` scores the label image, not the plate."""
    _, big = blurred_model
    image = _image(tmp_path)  # a 2 x 2 BBBC039 mosaic (synthetic nuclei without the data)
    out = tmp_path / "seg"
    assert main(["segment", str(big), str(image), "-o", str(out)]) == 0
    store = out / "labels" / "mosaic.ome.zarr"
    labels = read_labels(store)
    truth = tmp_path / "truth"
    truth.mkdir()
    tifffile.imwrite(truth / "mosaic.tif", labels)
    # the plate copy that --format ome-zarr writes beside labels/ (made here from the same labels)
    write_plate_labels(out / "labels.ome.zarr", [{"name": "mosaic", "well": "A01", "label_file": str(truth / "mosaic.tif")}])
    assert main(["evaluate", "--truth", str(truth), "--pred", str(out), "-o", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_images"] == 1 and metrics["overall"]["f1"] == 1.0 and metrics["overall"]["n_pred"] == int(labels.max()) > 100


def _store(tmp_path: Path) -> Path:
    model = _model()
    rng = np.random.default_rng(0)
    image = rng.normal(150, 8, (300, 260))
    yy, xx = np.mgrid[0:300, 0:260]
    for y, x in rng.integers(20, 240, (25, 2)):
        image[(yy - y) ** 2 + (xx - x) ** 2 < 81] += 900
    return segment_blockwise(model, image.astype(np.uint16), tmp_path / "pred", name="field", band=128).labels_path


def test_a_missing_or_corrupt_store_is_a_one_line_error(tmp_path):
    store = _store(tmp_path)
    labels = read_labels(store)
    assert int(labels.max()) > 5
    truth = tmp_path / "truth"
    truth.mkdir()
    tifffile.imwrite(truth / "field.tif", labels)

    def fails(match: str) -> str:
        with pytest.raises(StainsegError, match=match) as err:
            evaluate_folders(truth, tmp_path / "pred", tmp_path / "eval")
        message = str(err.value)
        assert "\n" not in message and str(store) in message and "stainseg segment" in message
        return message

    # a chunk file overwritten with garbage: not decodable
    chunk = next(p for p in sorted((store / "0").rglob("*")) if p.is_file() and not p.name.startswith("."))
    saved = chunk.read_bytes()
    chunk.write_bytes(b"not a zarr chunk" * 4)
    fails("cannot read the OME-Zarr label image .*corrupt.*run stainseg segment again")
    chunk.write_bytes(saved)
    assert evaluate_folders(truth, tmp_path / "pred", tmp_path / "eval")["overall"]["f1"] == 1.0
    # the full-resolution level is gone
    shutil.rmtree(store / "0")
    fails("no resolution level 0.*incomplete.*run stainseg segment again")
    # the group metadata is gone
    for name in store.iterdir():
        shutil.rmtree(name) if name.is_dir() else name.unlink()
    fails("not a readable OME-Zarr label image.*run stainseg segment again")
    # missing: read directly by name
    with pytest.raises(StainsegError, match=r"absent\.ome\.zarr: no OME-Zarr label image here; give OUT/labels/<name>\.ome\.zarr"):
        read_labels(tmp_path / "absent.ome.zarr")
