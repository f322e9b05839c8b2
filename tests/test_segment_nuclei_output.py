"""`stainseg segment` with a model of cells grown from nuclei writes the network's nuclei beside the cells.

OUT/labels/<name>.tif are the cells, OUT/nuclei/<name>.tif the nuclei they were grown from (nucleus k inside cell k),
listed in index.csv's ``nuclei_file`` column. The model is untrained (fixed seed) with its threshold set to the top
tenth of its own probability map on the real bundled phase crop, so that the stage is tested on many objects in
a second instead of a training; what the stage writes must be exactly what ``Model.run`` returns.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stainseg.model import Model


@pytest.fixture(scope="module")
def phase() -> np.ndarray:
    from stainseg.data import isl_sample

    return isl_sample(planes=[6])["phase"][0]


def _cells_model(folder: Path, phase: np.ndarray) -> Path:
    import torch

    from stainseg.groundtruth.extent import CellExtent

    torch.manual_seed(0)
    model = Model.new(["phase"], objects="cells")
    model.cell_extent = CellExtent()
    prob = model.predict_probability(phase)[1]
    model.segment_settings.threshold = float(np.quantile(prob, 0.9))  # untrained: its brightest tenth as nuclei
    model.segment_settings.min_size = 20
    return model.save(folder, onnx=False)


def _index(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_segment_writes_the_nuclei_of_cells_grown_from_nuclei(phase, tmp_path: Path) -> None:
    from stainseg.stages.segment import segment_files

    folder = _cells_model(tmp_path / "MODEL", phase)
    images = {"left": phase[:, :256], "right": phase[:, 256:], "blank": np.full((96, 128), 300, np.uint16)}
    for name, image in images.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
    out = tmp_path / "OUT"
    result = segment_files(folder, [tmp_path / f"{n}.tif" for n in images], out)
    assert not result.failed

    model = Model.load(folder)
    assert model.objects == "cells" and model.network_objects == "nuclei"
    rows = {row["name"]: row for row in _index(out)}
    assert set(rows) == set(images)
    for name, image in images.items():
        cells = tifffile.imread(out / "labels" / f"{name}.tif")
        nuclei = tifffile.imread(out / "nuclei" / f"{name}.tif")
        assert Path(rows[name]["nuclei_file"]) == (out / "nuclei" / f"{name}.tif").resolve()
        expected = model.run(image.astype(np.float32))
        np.testing.assert_array_equal(nuclei, expected["nuclei"])
        np.testing.assert_array_equal(cells, expected["labels"])
        if name == "blank":  # no network run: no cells, no nuclei, both files written
            assert not cells.any() and not nuclei.any() and rows[name]["flags"] == "blank"
            continue
        assert nuclei.max() >= 3 and (cells > 0).sum() > (nuclei > 0).sum()
        np.testing.assert_array_equal(cells[nuclei > 0], nuclei[nuclei > 0])  # each nucleus inside its own cell
        assert set(np.unique(cells)) == set(np.unique(nuclei))  # one cell per nucleus
        assert int(rows[name]["cells"]) == len(np.unique(cells)) - 1

    # --resume keeps the finished records (nuclei_file included); a killed writer's temporary in nuclei/ is cleared
    stale = out / "nuclei" / ".left.tif.a1b2c3d4.tmp"
    stale.write_bytes(b"half")
    segment_files(folder, [tmp_path / f"{n}.tif" for n in images], out, resume=True)
    assert _index(out) == list(rows.values()) and not stale.exists()


def test_segment_of_other_models_writes_no_nuclei(phase, tmp_path: Path) -> None:
    from stainseg.stages.segment import segment_files

    folder = Model.new(["phase"]).save(tmp_path / "MODEL", onnx=False)
    tifffile.imwrite(tmp_path / "left.tif", phase[:, :128])
    out = tmp_path / "OUT"
    assert not segment_files(folder, [tmp_path / "left.tif"], out).failed
    assert (out / "labels" / "left.tif").is_file() and not (out / "nuclei").exists()
    assert "nuclei_file" not in _index(out)[0]
