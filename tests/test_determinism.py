"""Determinism: the same inputs, model and seed give byte-identical outputs on the CPU, run twice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainseg.cli import main
from stainseg.model import Model

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_model  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    from stainseg.synth import generate_experiment

    base = tmp_path_factory.mktemp("determinism")
    toml = generate_experiment(base / "exp", wells=1, sites=2, times=2, size=96, seed=3)
    return {"base": base, "toml": toml, "model": make_model(base / "model", toml, 3, seed=7)}


def _files(out: Path) -> dict[str, bytes]:
    """Every output whose content should not depend on the run (run.json and timings excluded)."""
    keep = [*out.glob("labels/*.tif"), *out.glob("probability/*.tif"), *out.glob("uncertainty/*.tif"), out / "cells.csv"]
    return {str(p.relative_to(out)): p.read_bytes() for p in keep}


def test_same_seed_same_weights(world):
    again = make_model(world["base"] / "model_again", world["toml"], 3, seed=7)
    a, b = Model.load(world["model"]).network.state_dict(), Model.load(again).network.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = Model.load(make_model(world["base"] / "model_other", world["toml"], 3, seed=8)).network.state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_segment_twice_gives_identical_bytes(world, tmp_path):
    outs = []
    for run in ("first", "second"):
        out = tmp_path / run
        argv = ["segment", str(world["model"]), "--experiment", str(world["toml"]), "-o", str(out), "--save-probability", "--save-uncertainty"]
        assert main(argv) == 0
        outs.append(_files(out))
    first, second = outs
    assert len([k for k in first if k.startswith("labels/")]) == 4
    assert any(k.startswith("probability/") for k in first) and any(k.startswith("uncertainty/") for k in first)
    assert first.keys() == second.keys()
    prob = tifffile.imread(tmp_path / "first" / "probability" / "A01_s1_t00.tif")
    assert prob.dtype == np.float32 and prob.std() > 0  # a real map is compared, not a constant
    for name in first:
        assert first[name] == second[name], f"{name} differs between two identical runs"


def test_file_mode_matches_experiment_mode(world, tmp_path):
    """A 3-plane stack file segments to the same labels as the image set it was made from."""
    images = world["toml"].parent / "images"
    name = "A01_s1_t00"
    stack = np.stack([tifffile.imread(images / f"{name}_z{z}_BF.tif") for z in range(3)])
    tifffile.imwrite(tmp_path / f"{name}.tif", stack)
    assert main(["segment", str(world["model"]), str(tmp_path / f"{name}.tif"), "-o", str(tmp_path / "files")]) == 0
    assert main(["segment", str(world["model"]), "--experiment", str(world["toml"]), "-o", str(tmp_path / "exp")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "files" / "labels" / f"{name}.tif"),
                                  tifffile.imread(tmp_path / "exp" / "labels" / f"{name}.tif"))
