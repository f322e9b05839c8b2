"""`stainseg groundtruth` over a whole experiment: outputs, QC table, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stainseg.cli import main
from stainseg.config import load_config
from stainseg.evaluate.summary import evaluate_pair
from stainseg.stages.groundtruth import run_groundtruth
from stainseg.io.atomic import read_csv
from stainseg.io.images import read_labels, write_image
from stainseg.synth import generate_experiment


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return generate_experiment(out, wells=1, sites=2, times=2, size=256, seed=3)


def test_outputs_and_accuracy(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt"
    summary = run_groundtruth(load_config(synth), out, preview=True, progress=False)
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["A01_s1_t01.tif", "A01_s2_t01.tif"]
    index = read_csv(out / "index.csv")
    assert [r["split"] for r in index] == ["train", "test"]
    assert {"well", "site", "time", "objects", "label_file", "sources", "exclude"} <= set(index[0])
    qc = read_csv(out / "qc.csv")
    assert {"n_objects", "median_area", "foreground_fraction", "contrast", "exclude", "reason"} <= set(qc[0])
    assert len(list((out / "previews").glob("*.png"))) == 2
    assert (out / "run.json").exists() and (out / "config.toml").exists()
    for row in index:
        truth = read_labels(synth.parent / "truth" / "cells" / f"{row['image_set']}.tif")
        pred = read_labels(out / "labels" / f"{row['image_set']}.tif")
        scores = evaluate_pair(truth, pred)
        assert scores["f1"] > 0.8, row["image_set"]
        assert int(row["objects"]) == len(np.unique(pred)) - 1
    assert "2 image sets" in summary.text()


def test_resume_skips_done_sets(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt"
    run_groundtruth(load_config(synth), out, progress=False)
    stamp = (out / "labels" / "A01_s1_t01.tif").stat().st_mtime_ns
    (out / "labels" / "A01_s2_t01.tif").unlink()  # as if killed before this one
    run_groundtruth(load_config(synth), out, progress=False)
    assert (out / "labels" / "A01_s1_t01.tif").stat().st_mtime_ns == stamp
    assert (out / "labels" / "A01_s2_t01.tif").exists()


def test_constant_stain_is_flagged_not_crash(synth: Path, tmp_path: Path) -> None:
    hoechst = synth.parent / "images" / "A01_s2_t01_Hoechst.tif"
    original = hoechst.read_bytes()
    try:
        write_image(hoechst, np.full((256, 256), 100, np.uint16))
        rows = run_groundtruth(load_config(synth), tmp_path / "gt", progress=False).rows
    finally:
        hoechst.write_bytes(original)
    flat = [r for r in rows if r["image_set"] == "A01_s2_t01"][0]
    assert flat["exclude"] is True and flat["objects"] == 0 and flat["reason"]


def test_cli_missing_stain_is_one_line(synth: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(synth.read_text().replace('nuclei    = "Hoechst"', 'nuclei    = "DAPI"').replace('root    = "images"', f'root = "{synth.parent / "images"}"'))
    assert main(["groundtruth", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no 'DAPI' images" in err


def test_cellprofiler_human_cells_have_one_nucleus(cellprofiler_human: Path, tmp_path: Path) -> None:
    toml = tmp_path / "cp.toml"
    toml.write_text(f"""root = "{cellprofiler_human}"
pattern = 'AS_09125_050116030001_(?P<well>D03)f00d(?P<channel>\\d)\\.tif'
objects = "cells"
[channels]
input = ["1"]
nuclei = "0"
cytoplasm = "2"
""")
    out = tmp_path / "gt"
    run_groundtruth(load_config(toml), out, preview=True, progress=False)
    cells = read_labels(out / "labels" / "D03.tif")
    assert cells.max() > 20
    assert (out / "previews" / "D03.png").exists()
