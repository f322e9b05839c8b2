"""bioimage.io export: the package validates with bioimageio.spec and its test tensors reproduce in
bioimageio.core (skipped where those are not installed; see docs/bioimageio.md).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from stainseg.config import ChannelsConfig, ExperimentConfig, ModelConfig, SegmentConfig
from stainseg.errors import StainsegError
from stainseg.modeldir import save_model_dir
from stainseg.network import StainNet

spec = pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed (pip install 'stainseg[bioimageio]')")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    cfg = ExperimentConfig(name="demo", root=".", pattern=r"(?P<channel>[A-Za-z]+)\.tif",
                           channels=ChannelsConfig(input=["BF"], nuclei="DNA"),
                           model=ModelConfig(in_channels=1, head="3class"), segment=SegmentConfig(tile_size=64))
    return save_model_dir(tmp_path_factory.mktemp("model"), StainNet(cfg.model), cfg, history=[], extra={"input_channels": ["BF"]})


def _sample(shape=(150, 190)) -> np.ndarray:
    rng = np.random.default_rng(1)
    image = 1000 + 2 * np.arange(shape[1])[None, :] + rng.normal(0, 20, shape)
    for cy, cx in [(40, 40), (90, 120), (110, 50)]:
        rr, cc = disk((cy, cx), 12, shape=shape)
        image[rr, cc] += 900
    return image.astype(np.float32)[None]


@pytest.fixture(scope="module")
def package(model_dir, tmp_path_factory) -> Path:
    from stainseg.export.bioimageio import export_bioimageio

    return export_bioimageio(model_dir, tmp_path_factory.mktemp("out") / "model.zip", sample=_sample())


def test_package_validates_with_bioimageio_spec(package):
    from bioimageio.spec import load_description

    descr = load_description(package)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert descr.type == "model"
    assert set(descr.weights.available_formats) >= {"pytorch_state_dict", "torchscript"}
    assert [str(c.doi) for c in descr.cite if c.doi] == ["10.1038/s41598-017-07599-6"]
    assert [a.channel_names for a in descr.inputs[0].axes if a.type == "channel"] == [["BF"]]
    names = set(zipfile.ZipFile(package).namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt",
            "weights.torchscript.pt", "model.json", "config.toml", "sample_input.tif", "sample_output.tif"} <= names
    with zipfile.ZipFile(package) as zf:
        test_input = np.load(zf.open("test_input.npy"))
        test_output = np.load(zf.open("test_output.npy"))
    assert test_input.shape == (1, 1, 144, 184)  # centre crop to a multiple of 2**depth
    assert test_output.shape == (1, 3, 144, 184)
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)


def test_package_weights_reproduce_stainseg(package, model_dir):
    """Both weight files applied with the rdf's pre-processing give stainseg's own output."""
    import torch

    from stainseg.export.bioimageio import BioimageioStainNet
    from stainseg.modeldir import load_model
    from stainseg.preprocess import normalize

    with zipfile.ZipFile(package) as zf:
        x = np.load(zf.open("test_input.npy"))
        scripted = torch.jit.load(zf.open("weights.torchscript.pt"))
        state = torch.load(zf.open("weights.pt"), weights_only=True)
    lo, hi = np.percentile(x[0], [0.5, 99.5], axis=(1, 2))
    scaled = np.clip((x - lo[None, :, None, None]) / (hi - lo)[None, :, None, None], 0, 1).astype(np.float32)
    wrapped = BioimageioStainNet(in_channels=1)
    wrapped.load_state_dict(state)
    model, _, _ = load_model(model_dir)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(normalize(x[0]))[None]), 1).numpy()
        for net in (wrapped.eval(), scripted):
            np.testing.assert_allclose(net(torch.from_numpy(scaled)).numpy(), expected, atol=1e-4)


def test_export_refuses_a_sample_with_other_channels(model_dir, tmp_path):
    from stainseg.export.bioimageio import export_bioimageio

    with pytest.raises(StainsegError, match="channel"):
        export_bioimageio(model_dir, tmp_path / "m.zip", sample=np.zeros((3, 64, 64, 5), np.float32))
    assert not (tmp_path / "m.zip").exists()


@pytest.mark.slow  # ~20 s on a shared 2-core machine
def test_package_passes_bioimageio_core_test_model(package):
    core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed (pip install 'stainseg[bioimageio]')")
    summary = core.test_model(package)
    failed = [(d.name, [str(e.msg) for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    names = [d.name for d in summary.details]
    assert any("Reproduce test outputs" in n and "torchscript" in n for n in names)
    assert any("Reproduce test outputs" in n and "pytorch_state_dict" in n for n in names)
