"""Whole cells from a nuclear stain alone: cell extent from the label-free image (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stainseg.config import GroundTruthConfig, load_config
from stainseg.errors import StainsegError
from stainseg.evaluate.matching import match_iou, object_fscores, overlap_table, percent_above
from stainseg.groundtruth import groundtruth_for_set
from stainseg.groundtruth.extent import cells_from_nuclei, texture_foreground
from stainseg.io.images import read_image, read_labels


def _one_nucleus_per_cell(cells: np.ndarray, nuclei: np.ndarray) -> None:
    inside = nuclei > 0
    np.testing.assert_array_equal(cells[inside], nuclei[inside])  # each nucleus wholly in its own cell
    assert set(np.unique(cells)) <= set(np.unique(nuclei))  # no cell without a nucleus


def _synthetic(rng):
    """Phase-like field: flat noisy dish, two touching textured cells, one lone cell, one nucleus on bare dish."""
    shape = (120, 200)
    phase = 1000 + rng.normal(0, 5, shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    body = ((yy - 60) ** 2 / 35 ** 2 + (xx - 60) ** 2 / 50 ** 2 <= 1) | ((yy - 60) ** 2 + (xx - 160) ** 2 <= 25 ** 2)
    phase[body] += rng.normal(0, 120, int(body.sum()))
    nuclei = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate([(60, 35), (60, 85), (60, 160), (10, 190)], start=1):
        nuclei[(yy - cy) ** 2 + (xx - cx) ** 2 <= 7 ** 2] = k
    return phase.astype(np.float32), nuclei, body


def test_synthetic_cells_from_texture():
    phase, nuclei, body = _synthetic(np.random.default_rng(0))
    cells = cells_from_nuclei(phase, nuclei)
    _one_nucleus_per_cell(cells, nuclei)
    fg = texture_foreground(phase, min_area=70)
    # the 2 px texture window reaches ~4 px past an edge: a rim of 18 % of the foreground here
    assert (fg & body).sum() / body.sum() > 0.95 and (fg & ~body).sum() / fg.sum() < 0.25
    assert not (cells > 0)[~fg & (nuclei == 0)].any()  # nothing outside the foreground but nuclei
    assert cells[60, 20] == 1 and cells[60, 100] == 2 and cells[60, 175] == 3  # the touching pair split
    np.testing.assert_array_equal(cells == 4, nuclei == 4)  # nucleus on bare dish: just itself
    assert cells[5, 5] == 0
    # two focal planes (a z-stack) give the same cells as one
    two = cells_from_nuclei(np.stack([phase, phase]), nuclei)
    np.testing.assert_array_equal(two, cells)


def test_groundtruth_for_set_cells_without_cytoplasm():
    rng = np.random.default_rng(1)
    phase, nuclei, _ = _synthetic(rng)
    stain = (100 + 900 * (nuclei > 0) + rng.normal(0, 5, nuclei.shape)).astype(np.float32)
    cfg = GroundTruthConfig(illumination="none")
    labels, qc, extras = groundtruth_for_set({"dna": stain}, "dna", None, "cells", cfg, label_free=phase[None])
    assert qc["n_nuclei"] == 4 and labels.max() == 4
    _one_nucleus_per_cell(labels, extras["nuclei"])
    assert (labels > 0).sum() > 3 * (extras["nuclei"] > 0).sum()
    with pytest.raises(StainsegError, match="cytoplasm stain or the label-free input"):
        groundtruth_for_set({"dna": stain}, "dna", None, "cells", cfg)
    with pytest.raises(StainsegError, match="same field"):
        groundtruth_for_set({"dna": stain}, "dna", None, "cells", cfg, label_free=phase[None, :100])
    with pytest.raises(StainsegError, match="same field"):
        cells_from_nuclei(phase, nuclei[:100])


def test_config_cells_without_cytoplasm_is_valid(tmp_path: Path):
    path = tmp_path / "exp.toml"
    path.write_text('root = "images"\npattern = "(?P<well>[A-P]\\\\d+)_(?P<channel>\\\\w+)\\\\.tif"\n'
                    'objects = "cells"\n\n[channels]\ninput = ["phase"]\nnuclei = "dapi"\n')
    cfg = load_config(path)
    assert cfg.objects == "cells" and cfg.channels.cytoplasm is None


# ----------------------------------------------------------------------------- deepcell (manual whole cells)

#: Floors: measured 2026-12-01 (benchmarks/cells_from_nuclei.py) minus a margin of about 5 points.
FLOORS = {"HeLa_s2": (84.8, 0.789), "BMDM_s1": (90.1, 0.811), "MCF10A_s2": (77.1, 0.700)}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_deepcell_cells_from_phase(shared_data, name):
    folder = shared_data / "deepcell"
    if not (folder / "masks_cells" / f"{name}.tif").is_file():
        pytest.skip(f"deepcell field {name} is absent from {folder}")
    nuclear = read_image(folder / "images" / f"{name}_nuclear.tif")
    phase = read_image(folder / "images" / f"{name}_phase.tif")
    manual = read_labels(folder / "masks_cells" / f"{name}.tif").astype(np.int32)
    cells, _, extras = groundtruth_for_set({"nuclear": nuclear}, "nuclear", None, "cells", label_free=phase[None])
    nuclei = extras["nuclei"]
    _one_nucleus_per_cell(cells, nuclei)
    planes = extras["label_free"]
    area = np.median(np.bincount(nuclei.ravel())[1:])
    foreground = texture_foreground(planes, int(round(area / 2)))
    assert not (cells > 0)[~foreground & (nuclei == 0)].any()
    table = overlap_table(manual, cells)
    f06 = percent_above(object_fscores(table), 0.6)
    f1 = float(match_iou(table, thresholds=[0.5])["f1"][0])
    floor_f, floor_f1 = FLOORS[name]
    assert f06 >= floor_f - 5, f06
    assert f1 >= floor_f1 - 0.05, f1
