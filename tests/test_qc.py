"""QC of automatic labels and the per-image-set composition (METHOD.md 1.5, 1.6)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from stainseg.config import GroundTruthConfig
from stainseg.errors import StainsegError
from stainseg.groundtruth import groundtruth_for_set, preview_png, qc_metrics, qc_table


def _field(rng, n_nuclei=30, shape=(256, 256), radius=8, z=3):
    """A (Z, Y, X) nuclear stain and a matching cytoplasm stain with separated round cells."""
    nuc = np.zeros(shape, np.float32)
    cyto = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    side = int(np.ceil(np.sqrt(n_nuclei)))
    step = shape[0] // side
    for i in range(n_nuclei):
        cy, cx = step // 2 + (i // side) * step, step // 2 + (i % side) * step
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        nuc[d2 <= radius ** 2] = 500
        cyto[d2 <= (2.2 * radius) ** 2] = 200
    nuc_stack = np.stack([ndi.gaussian_filter(nuc, 1) + 100 + rng.normal(0, 5, shape) for _ in range(z)])
    cyto_stack = np.stack([ndi.gaussian_filter(cyto, 1) + 20 + rng.normal(0, 3, shape) for _ in range(z)])
    return nuc_stack.astype(np.float32), cyto_stack.astype(np.float32)


def test_qc_metrics_on_known_labels():
    labels = np.zeros((100, 100), np.int32)
    labels[0:10, 0:10] = 1  # 100 px
    labels[20:30, 20:30] = 2  # 100 px
    labels[40:70, 40:70] = 3  # 900 px: merged-sized
    stain = np.where(labels > 0, 300.0, 100.0) + np.random.default_rng(0).normal(0, 10, labels.shape)
    m = qc_metrics(labels, stain)
    assert m["n_objects"] == 3 and m["median_area"] == 100
    assert m["foreground_fraction"] == pytest.approx(0.11)
    assert m["area_outlier_fraction"] == pytest.approx(1 / 3)
    assert m["contrast"] == pytest.approx(3.0, rel=0.02)
    assert m["signal_to_noise"] == pytest.approx(20.0, rel=0.1)
    assert m["flag"] == ""
    empty = qc_metrics(np.zeros((10, 10), np.int32), np.zeros((10, 10)))
    assert empty["n_objects"] == 0 and empty["flag"]


def test_qc_table_flags_outliers_with_reason():
    rng = np.random.default_rng(0)
    rows = [{"name": f"s{i}", "n_objects": int(100 + rng.integers(-5, 6)), "median_area": 400.0 + rng.normal(0, 10),
             "foreground_fraction": 0.2, "area_outlier_fraction": 0.05, "contrast": 4.0 + rng.normal(0, 0.1),
             "signal_to_noise": 30.0 + rng.normal(0, 2), "flag": ""} for i in range(12)]
    rows[3]["n_objects"] = 12  # a failed threshold
    rows[7]["area_outlier_fraction"] = 0.6  # many split / merged objects
    rows[9]["flag"] = "no objects found in the stain"
    rows[10]["signal_to_noise"] = 4.0  # a faint stain
    rows[11]["signal_to_noise"] = 90.0  # a bright one is fine (one-sided rule)
    out = qc_table(rows, qc_mad=3.0)
    excluded = {r["name"]: r["reason"] for r in out if r["exclude"]}
    assert set(excluded) == {"s3", "s7", "s9", "s10"}
    assert "signal-to-noise ratio of the stain 4 is below" in excluded["s10"]
    assert "object count 12 is below" in excluded["s3"]
    assert "split/merged" in excluded["s7"]
    assert excluded["s9"] == "no objects found in the stain"
    assert all(r["reason"] == "" for r in out if not r["exclude"])
    codes = {r["name"]: r["codes"] for r in out}  # the quality vocabulary shared with segmentation
    assert codes["s3"] == "too_few_objects" and codes["s7"] == "object_size" and codes["s10"] == "low_signal"
    assert excluded["s3"].startswith("too_few_objects: object count 12 is below")
    assert codes["s0"] == ""
    assert out[0]["name"] == "s0"  # other keys pass through


def test_qc_table_identical_sets_and_few_sets():
    same = [{"n_objects": 50, "median_area": 300.0, "foreground_fraction": 0.1, "area_outlier_fraction": 0.0,
             "contrast": 3.0, "flag": ""} for _ in range(6)]
    same[0] = dict(same[0], n_objects=51)  # MAD is 0: a one-object difference must not exclude
    assert not any(r["exclude"] for r in qc_table(same))
    two = [dict(same[1]), dict(same[1], n_objects=500)]  # too few sets for plate statistics
    assert not any(r["exclude"] for r in qc_table(two))


def test_groundtruth_for_set_nuclei_and_cells(tmp_path):
    rng = np.random.default_rng(1)
    nuc, cyto = _field(rng)
    stains = {"hoechst": nuc, "celltracker": cyto}
    nuclei, m, extras = groundtruth_for_set(stains, "hoechst", objects="nuclei")
    assert nuclei.max() == 30 and m["n_objects"] == 30 and m["flag"] == ""
    assert extras["corrected"]["hoechst"].shape == (256, 256)
    cells, m2, extras2 = groundtruth_for_set(stains, "hoechst", "celltracker", "cells", GroundTruthConfig())
    assert cells.max() == 30 and m2["n_nuclei"] == 30
    assert m2["median_area"] > 3 * m["median_area"]  # cells are about (2.2)^2 times the nucleus area
    for k in range(1, 31):
        assert np.all(cells[extras2["nuclei"] == k] == k)
    out = preview_png(tmp_path / "p.png", extras2["corrected"]["celltracker"], cells)
    png = np.asarray(Image.open(out))
    assert png.shape == (256, 256, 3) and png.dtype == np.uint8
    assert np.any(np.all(png == (255, 230, 0), axis=-1))  # outlines drawn
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_groundtruth_for_set_bad_inputs_are_clear():
    rng = np.random.default_rng(2)
    nuc, cyto = _field(rng)
    with pytest.raises(StainsegError, match="'dna' 256 x 256, 'body' 200 x 256"):
        groundtruth_for_set({"dna": nuc, "body": cyto[:, :200]}, "dna", "body", "cells")
    with pytest.raises(StainsegError, match="no stain 'dapi'"):
        groundtruth_for_set({"dna": nuc}, "dapi")
    with pytest.raises(StainsegError, match="cytoplasm"):
        groundtruth_for_set({"dna": nuc}, "dna", objects="cells")
    bad = nuc.copy()
    bad[0, 5, 5] = np.nan
    with pytest.raises(StainsegError, match="'dna'.*NaN"):
        groundtruth_for_set({"dna": bad}, "dna")


def test_constant_and_zero_stains_give_no_objects_and_a_flag():
    for value in (0, 17):
        stack = np.full((3, 128, 128), value, np.uint16)
        labels, m, _ = groundtruth_for_set({"dna": stack}, "dna")
        assert labels.max() == 0 and m["n_objects"] == 0 and m["flag"]
        row = qc_table([m])[0]
        assert row["exclude"] and row["reason"]
        assert row["codes"] in ("blank", "too_few_objects") and row["reason"].startswith(row["codes"] + ": ")


def test_groundtruth_for_set_with_plate_illumination():
    from stainseg.groundtruth import plate_illumination

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:256, 0:256] / 255
    gradient = (1 + yy + xx).astype(np.float32)  # 1x .. 3x
    sets = [_field(rng) for _ in range(4)]
    stacks = [nuc * gradient for nuc, _ in sets]
    field = plate_illumination(stack[z] for stack in stacks for z in range(stack.shape[0]))
    cfg = GroundTruthConfig(illumination="plate")
    labels, m, extras = groundtruth_for_set({"dna": stacks[0]}, "dna", cfg=cfg, plate_fields={"dna": field})
    assert labels.max() == 30 and m["flag"] == ""
    corrected = extras["corrected"]["dna"]
    background = corrected[labels == 0]
    assert background.std() / background.mean() < 0.1  # the 3x gradient is gone from the background
    with pytest.raises(StainsegError, match="plate"):
        groundtruth_for_set({"dna": stacks[0]}, "dna", cfg=cfg)
