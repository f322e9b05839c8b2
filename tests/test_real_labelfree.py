"""Real label-free microscopy (issue 16): automatic labels and networks on deepcell phase contrast and the isl z-stack.

The data live in ../shared/data (research use, never bundled); every test here skips with a reason
when they are absent. The trainings are short (a few minutes on 2 cores), so the floors are those
of a briefly trained network (benchmarks/real_labelfree.py gives the full figures), with a margin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import clear_border

import stainseg
from stainseg.groundtruth.extent import texture_foreground, typical_nucleus_area
from stainseg.io.images import read_image, read_labels

pytestmark = pytest.mark.data


def _deepcell(shared_data: Path, name: str) -> dict[str, np.ndarray]:
    folder = shared_data / "deepcell"
    if not (folder / "images" / f"{name}_phase.tif").is_file():
        pytest.skip(f"deepcell field {name} is absent from {folder}")
    return {"phase": read_image(folder / "images" / f"{name}_phase.tif"),
            "nuclear": read_image(folder / "images" / f"{name}_nuclear.tif"),
            "cells": read_labels(folder / "masks_cells" / f"{name}.tif").astype(np.int32)}


def test_hela_cells_from_the_nuclear_stain_alone_hold_one_nucleus_inside_the_foreground(shared_data):
    """stainseg.automatic_labels(objects="cells") without a cytoplasm stain, on a held-out HeLa field."""
    f = _deepcell(shared_data, "HeLa_s5")
    nuclei = stainseg.automatic_labels(nuclei=f["nuclear"])
    cells = stainseg.automatic_labels(nuclei=f["nuclear"], objects="cells", label_free=f["phase"])
    inside = nuclei > 0
    np.testing.assert_array_equal(cells[inside], nuclei[inside])  # every nucleus wholly in its own cell
    assert set(np.unique(cells)) == set(np.unique(nuclei))  # one cell per nucleus, none without
    # no cell leaves the foreground of the (illumination-corrected) phase image except by its own nucleus
    from stainseg.groundtruth.pipeline import groundtruth_for_set

    again, _, extras = groundtruth_for_set({"nuclear": f["nuclear"]}, "nuclear", None, "cells", label_free=f["phase"][None])
    np.testing.assert_array_equal(again, cells)
    foreground = texture_foreground(extras["label_free"], int(round(typical_nucleus_area(extras["nuclei"]) / 2)))
    assert not (cells > 0)[~foreground & (extras["nuclei"] == 0)].any()
    scores = stainseg.evaluate(f["cells"], cells)
    assert scores["percent_f_above"] >= 73.0 and scores["f1"] >= 0.67, scores  # measured 78.1 % / 0.718


@pytest.fixture(scope="module")
def hela_nuclei_model(shared_data):
    """Phase -> nuclei, labels from the nuclear stain of HeLa s2-s4, trained for 3 minutes."""
    fields = [_deepcell(shared_data, f"HeLa_s{s}") for s in (2, 3, 4)]
    labels = [stainseg.automatic_labels(nuclei=f["nuclear"]) for f in fields]
    return stainseg.train([f["phase"] for f in fields], labels, iterations=1500, max_minutes=3.0, input_channels=["phase"],
                          device="cpu", progress=False), labels


@pytest.mark.slow
def test_phase_nuclei_model_keeps_its_settings_and_counts_nuclei_on_held_out_fields(shared_data, hela_nuclei_model):
    from stainseg.segment.derive import derived_settings, object_statistics

    model, labels = hela_nuclei_model
    # derived from ALL the training labels and the loss's foreground weight
    stats = object_statistics(labels)
    assert model.derived["objects"] == stats
    expected = derived_settings(stats, model.info["foreground_factor"])
    assert model.derived["derived"] == expected
    assert model.segment_settings.min_distance == expected["min_distance"]
    f = _deepcell(shared_data, "HeLa_s5")
    auto = stainseg.automatic_labels(nuclei=f["nuclear"])
    pred = model.segment(f["phase"])
    n_auto, n_pred = int(auto.max()), int(pred.max())
    assert 0.6 * n_auto <= n_pred <= 1.5 * n_auto, (n_pred, n_auto)
    areas = np.bincount(pred.ravel())[1:]
    assert not np.any((areas > 0) & (areas < 0.1 * np.median(np.bincount(auto.ravel())[1:]))), "specks remain"
    # the plating series (other exposure settings, ~10x dimmer phase) must not explode
    s7 = _deepcell(shared_data, "HeLa_s7")
    n_s7, n_manual = int(model.segment(s7["phase"]).max()), int(len(np.unique(s7["cells"])) - 1)
    assert n_s7 <= 2.0 * n_manual, (n_s7, n_manual)


@pytest.mark.slow
def test_isl_z_stack_nuclei_from_three_phase_planes(shared_data):
    """isl: three middle focal planes in, DAPI labels; train on the left part, score the right part."""
    folder = shared_data / "isl" / "images"
    if not (folder / "isl_s1_dapi.tif").is_file():
        pytest.skip(f"isl data are absent from {folder}")
    planes = np.stack([read_image(folder / f"isl_s1_phase_z{z:02d}.tif") for z in (5, 6, 7)]).astype(np.float32)
    labels = stainseg.automatic_labels(nuclei=read_image(folder / "isl_s1_dapi.tif"))
    x = np.sort(np.array(ndi.center_of_mass(labels > 0, labels, range(1, labels.max() + 1)))[:, 1])
    cut = int(np.ceil(x[int(round(0.6 * labels.max()))])) // 8 * 8  # 60 % of the nuclei train
    model = stainseg.train([planes[:, :, :cut]], [labels[:, :cut]], iterations=1500, max_minutes=3.0,
                           input_channels=["z5", "z6", "z7"], device="cpu", progress=False)
    pred = model.segment(planes)
    test = np.s_[:, cut + 16:]
    scores = stainseg.evaluate(clear_border(labels[test]), clear_border(pred[test]))
    # the scored part holds few whole nuclei (8 with the benchmark's 16 px gap); the count must not explode.
    # The target (>= 75 % F >= 0.6 against the DAPI reference) is not reached: a 250-iteration
    # model scored 0 % (it marks the cell bodies around the nuclei; docs/results.md), so no floor on F here.
    assert scores["n_truth"] >= 5
    assert scores["n_pred"] <= 3.0 * scores["n_truth"], scores
