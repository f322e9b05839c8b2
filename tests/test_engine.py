"""The inference engine of a model folder: ONNX Runtime on a CPU without importing torch, torch on
CUDA and for folders without model.onnx; the choice is recorded; nothing is written into the model folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnx", reason="onnx is not installed (needed to export; pip install onnx)")

import stainseg  # noqa: E402
from stainseg.errors import StainsegError  # noqa: E402
from stainseg.segment.engine import choose_engine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def _field(shared: Path) -> np.ndarray:
    """A real BBBC039 field (uint16, 520 x 696) when the data is there, else synthetic nuclei."""
    files = sorted((shared / "bbbc039" / "images").glob("*.tif")) if shared.is_dir() else []
    if files:
        return tifffile.imread(files[0])
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    centres = np.zeros((260, 348), np.float32)
    centres[rng.integers(0, 260, 40), rng.integers(0, 348, 40)] = 1
    return (150 + 5000 * ndi.gaussian_filter(centres, 5) + rng.normal(0, 8, centres.shape)).astype(np.uint16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved model with trained-like batch norms (the export folds them), and the same folder without model.onnx."""
    import shutil

    import torch

    from conftest import SHARED_DATA

    torch.manual_seed(0)
    model = stainseg.Model.new(["DNA"])
    for module in model.network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    model.segment_settings.bfloat16 = False  # float32 torch, to compare with ONNX Runtime's float32
    root = tmp_path_factory.mktemp("engine")
    out = model.save(root / "MODEL")
    old = root / "OLD"
    shutil.copytree(out, old)
    (old / "model.onnx").unlink()
    image = _field(SHARED_DATA)
    tifffile.imwrite(root / "field.tif", image)
    return {"model": model, "new": out, "old": old, "image": image, "tif": root / "field.tif"}


def test_save_writes_an_onnx_file_that_agrees_with_torch(folder):
    assert (folder["new"] / "model.onnx").is_file()
    onnx = stainseg.Model.load(folder["new"], engine="onnx")
    torch_ = stainseg.Model.load(folder["new"], engine="torch")
    assert (onnx.engine().engine, torch_.engine().engine) == ("onnx", "torch")
    p_onnx, p_torch = onnx.predict_probability(folder["image"]), torch_.predict_probability(folder["image"])
    assert p_onnx.shape == p_torch.shape == (2,) + folder["image"].shape
    assert float(np.abs(p_onnx - p_torch).max()) < 1e-4
    agree = (onnx.segment(folder["image"]) > 0) == (torch_.segment(folder["image"]) > 0)
    assert agree.mean() > 0.9999


def test_auto_without_gpu_is_onnx_and_torch_for_old_folders(folder, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert stainseg.Model.load(folder["new"]).engine().engine == "onnx"
    old = stainseg.Model.load(folder["old"])
    assert old.engine().engine == "torch" and "no model.onnx" in old.engine().reason
    assert old.segment(folder["image"]).shape == folder["image"].shape
    assert not (folder["old"] / "model.onnx").exists()  # segmenting never writes into the model folder
    with pytest.raises(StainsegError, match="no model.onnx"):
        stainseg.Model.load(folder["old"], engine="onnx")


def test_engine_rules():
    onnx = Path(__file__)  # any existing file stands for model.onnx
    assert choose_engine("auto", "cuda", onnx).engine == "torch"
    assert choose_engine("auto", "cpu", onnx).engine == "onnx"
    assert choose_engine("auto", "cpu", None).engine == "torch"
    assert choose_engine("torch", "cpu", onnx).engine == "torch"
    with pytest.raises(StainsegError, match="CPU only"):
        choose_engine("onnx", "cuda", onnx)
    with pytest.raises(StainsegError, match="not one of"):
        choose_engine("openvino", "cpu", onnx)


def test_changing_the_network_drops_the_exported_graph(folder):
    model = stainseg.Model.load(folder["new"], engine="auto", device="cpu")
    assert model.engine().engine == "onnx"
    model.network = model.network  # e.g. fine-tuned weights: model.onnx no longer matches
    assert model.onnx_file is None and model.engine().engine == "torch"


_SEGMENT_WITHOUT_TORCH = """
import json, sys
from stainseg.cli import main
code = main(["segment", sys.argv[1], sys.argv[2], "-o", sys.argv[3]] + sys.argv[4:])
heavy = ("dask", "distributed", "onnx", "matplotlib", "scipy.interpolate", "stainseg.groundtruth.cells", "stainseg.train")
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "modules": sorted(m for m in heavy if m in sys.modules)}))
"""


@pytest.mark.parametrize("engine", [[], ["--engine", "onnx"]])
def test_segmenting_a_folder_with_model_onnx_never_imports_torch(folder, tmp_path, engine):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", _SEGMENT_WITHOUT_TORCH, str(folder["new"]), str(folder["tif"]), str(out)] + engine,
                         capture_output=True, text=True, env=NO_GPU, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts == {"code": 0, "torch": False, "modules": []}
    record = json.loads((out / "run.json").read_text())
    assert record["engine"]["engine"] == "onnx" and record["engine"]["runtime"].startswith("onnxruntime")
    assert record["engine"]["setting"] == (engine[1] if engine else "auto")
    labels = tifffile.imread(out / "labels" / "field.tif")
    expected = stainseg.Model.load(folder["new"], engine="onnx").segment(folder["image"])
    np.testing.assert_array_equal(labels, expected)
    index = (out / "index.csv").read_text().splitlines()
    assert index[0].split(",")[index[0].split(",").index("engine")] == "engine" and ",onnx," in index[1]


def test_torch_engine_is_recorded(folder, tmp_path):
    from stainseg.cli import main

    assert main(["segment", str(folder["new"]), str(folder["tif"]), "-o", str(tmp_path / "out"), "--engine", "torch"]) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["engine"]["engine"] == "torch" and record["engine"]["reason"] == 'engine = "torch"'
