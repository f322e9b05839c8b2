"""The model's flat field: estimated from the training images, saved beside the weights, used instead of the
per-image spline fit when the user says the illumination is constant."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import stainseg
from stainseg.errors import StainsegError


@pytest.fixture(scope="module")
def fields(bbbc039):
    return [tifffile.imread(p) for p in sorted((bbbc039 / "images").glob("*.tif"))[:4]]


def test_flat_field_is_stored_and_replaces_the_spline_fit(fields, tmp_path):
    model = stainseg.Model.new(["DNA"])
    model.fit_statistics(fields[:3])
    flat = model.preprocessing.flat_field
    assert flat is not None and flat.shape == (1,) + fields[0].shape and abs(float(flat.mean()) - 1) < 1e-3
    loaded = stainseg.Model.load(model.save(tmp_path / "m", onnx=False))
    np.testing.assert_array_equal(loaded.preprocessing.flat_field, flat)
    per_image = loaded.prepare(fields[3])
    loaded.preprocessing.constant_illumination = True
    constant = loaded.prepare(fields[3])  # a held-out field of the same plate
    assert constant.shape == per_image.shape and not np.array_equal(constant, per_image)
    assert np.corrcoef(constant.ravel(), per_image.ravel())[0, 1] > 0.98  # same microscope, same illumination
    with pytest.raises(StainsegError, match="flat field"):
        loaded.prepare(fields[3][:300, :400])


def test_cli_flag_uses_it(fields, tmp_path):
    from stainseg.cli import main

    model = stainseg.Model.new(["DNA"])
    model.fit_statistics(fields[:3])
    folder = model.save(tmp_path / "m", onnx=False)
    tifffile.imwrite(tmp_path / "f.tif", fields[3])
    assert main(["segment", str(folder), str(tmp_path / "f.tif"), "-o", str(tmp_path / "out"), "--constant-illumination"]) == 0
    import json

    assert json.loads((tmp_path / "out" / "run.json").read_text())["constant_illumination"] is True
