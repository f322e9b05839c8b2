"""bioimage.io export: the package validates with bioimageio.spec and its test tensors reproduce in
bioimageio.core (skipped where those are not installed; see docs/bioimageio.md).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from stainseg.config import ChannelsConfig, ExperimentConfig, ModelConfig, PreprocessConfig, SegmentConfig
from stainseg.errors import StainsegError
from stainseg.model import Model

spec = pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed (pip install 'stainseg[bioimageio]')")


def _sample(shape=(150, 190), seed=1, level=1000.0) -> np.ndarray:
    """One bright-field-like plane: three bright discs on a sloped, noisy background (1, Y, X)."""
    rng = np.random.default_rng(seed)
    image = level + 2 * np.arange(shape[1])[None, :] + rng.normal(0, 20, shape)
    for cy, cx in [(40, 40), (90, 120), (110, 50)]:
        rr, cc = disk((cy + seed, cx - seed), 12, shape=shape)
        image[rr, cc] += 0.9 * level
    return image.astype(np.float32)[None]


def _experiment(root: Path, normalization: str = "hybrid") -> ExperimentConfig:
    """An experiment with one image set (BF.tif, DNA.tif) in ``root``."""
    import tifffile

    root.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "BF.tif", _sample()[0])
    tifffile.imwrite(root / "DNA.tif", _sample()[0])
    return ExperimentConfig(name="demo", root=str(root), pattern=r"(?P<channel>[A-Za-z]+)\.tif",
                            channels=ChannelsConfig(input=["BF"], nuclei="DNA"),
                            model=ModelConfig(in_channels=1, head="3class"), segment=SegmentConfig(tile_size=64),
                            preprocess=PreprocessConfig(normalization=normalization))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    cfg = _experiment(tmp_path_factory.mktemp("experiment"))
    folder = Model.new(["BF"], cfg=cfg).save(tmp_path_factory.mktemp("model") / "model")
    assert (folder / "experiment.toml").is_file()
    return folder


@pytest.fixture(scope="module")
def package(model_dir, tmp_path_factory) -> Path:
    from stainseg.export.bioimageio import export_bioimageio

    return export_bioimageio(model_dir, tmp_path_factory.mktemp("out") / "model.zip", sample=_sample())


def _outputs(package: Path):
    """test_input, test_output and both weight formats of a package."""
    import torch

    from stainseg.export.bioimageio import BioimageioStainNet

    with zipfile.ZipFile(package) as zf:
        x = np.load(zf.open("test_input.npy"))
        y = np.load(zf.open("test_output.npy"))
        scripted = torch.jit.load(zf.open("weights.torchscript.pt"))
        state = torch.load(zf.open("weights.pt"), weights_only=True)
        readme = zf.read("README.md").decode()
    from bioimageio.spec import load_description

    kwargs = load_description(package).weights.pytorch_state_dict.architecture.kwargs
    wrapped = BioimageioStainNet(**kwargs)
    wrapped.load_state_dict(state)
    return x, y, [wrapped.eval(), scripted], readme


def _expected(model: Model, raw: np.ndarray) -> np.ndarray:
    """stainseg's own output on a raw crop: Model.prepare, then the network on the whole crop."""
    import torch

    with torch.inference_mode():
        return torch.softmax(model.network.eval()(torch.from_numpy(model.prepare(raw))[None]), 1).numpy()


def test_package_carries_onnx_weights_that_reproduce_the_test_output(package):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import io

    with zipfile.ZipFile(package) as zf:
        assert "weights.onnx" in zf.namelist()
        test_input = np.load(io.BytesIO(zf.read("test_input.npy")))
        test_output = np.load(io.BytesIO(zf.read("test_output.npy")))
        session = ort.InferenceSession(zf.read("weights.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"raw": test_input.astype(np.float32)})[0]
    assert got.shape == test_output.shape and float(np.abs(got - test_output).max()) < 2e-3
    # another size (a multiple of 8) runs too: the quantiles are taken over the image's own pixel count
    other = session.run(None, {"raw": test_input[..., :64, :96].astype(np.float32)})[0]
    assert other.shape[-2:] == (64, 96) and np.allclose(other.sum(axis=1), 1.0, atol=1e-4)


def test_package_validates_with_bioimageio_spec(package):
    from bioimageio.spec import load_description

    descr = load_description(package)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert descr.type == "model"
    assert set(descr.weights.available_formats) >= {"pytorch_state_dict", "torchscript"}
    assert [str(c.doi) for c in descr.cite if c.doi] == ["10.1038/s41598-017-07599-6"]
    assert [a.channel_names for a in descr.inputs[0].axes if a.type == "channel"] == [["BF"]]
    assert not descr.inputs[0].preprocessing or all(p.id == "ensure_dtype" for p in descr.inputs[0].preprocessing)
    names = set(zipfile.ZipFile(package).namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt",
            "weights.torchscript.pt", "model.json", "sample_input.tif", "sample_output.tif"} <= names
    assert "config.toml" not in names
    with zipfile.ZipFile(package) as zf:
        test_input = np.load(zf.open("test_input.npy"))
        test_output = np.load(zf.open("test_output.npy"))
    assert test_input.shape == (1, 1, 144, 184)  # centre crop to a multiple of 2**depth
    assert test_output.shape == (1, 3, 144, 184)
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)


def test_package_is_model_prepare_on_the_sample(package, model_dir):
    """Test input = the centre crop after Model.prepare's illumination step; test output = network(Model.prepare(crop));
    both weight formats reproduce it from the test input; the README names the normalisation."""
    import torch

    from stainseg.preprocess import correct_plane

    model = Model.load(model_dir)
    crop = _sample()[:, 3:147, 3:187]
    x, y, nets, readme = _outputs(package)
    np.testing.assert_allclose(x[0], np.stack([correct_plane(p, model.preprocessing) for p in crop]), rtol=1e-6)
    def slope(im):  # background level right vs left, relative
        return abs(np.median(im[..., -20:]) - np.median(im[..., :20])) / np.median(im)

    assert model.preprocessing.illumination == "spline" and slope(crop) > 0.2 and slope(x) < 0.05  # the slope is corrected away
    np.testing.assert_allclose(y, _expected(model, crop), atol=1e-5)
    with torch.inference_mode():
        for net in nets:
            np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), y, atol=1e-4)
    assert 'normalization = "hybrid"' in readme and "no training statistics" in readme
    assert "illumination-corrected first" in readme


@pytest.mark.parametrize("normalization", ["hybrid", "training"])
def test_package_uses_the_training_statistics(normalization, tmp_path):
    """With training statistics, the package normalises as Model.prepare does ("hybrid" keeps a blank field dark)."""
    import torch

    from stainseg.export.bioimageio import export_bioimageio
    from stainseg.preprocess import correct_plane

    cfg = _experiment(tmp_path / "exp", normalization)
    model = Model.new(["BF"], cfg=cfg)
    model.fit_statistics([_sample(seed=s, level=300.0 * (s + 1)) for s in range(4)])
    folder = model.save(tmp_path / "model")
    assert Model.load(folder).preprocessing.statistics[0].images == 4
    blank = (1000 + np.random.default_rng(5).normal(0, 5, (1, 96, 96))).astype(np.float32)  # noise only
    for raw in (_sample(seed=7, level=2000.0), blank):
        package = export_bioimageio(folder, tmp_path / f"{normalization}-{raw.shape[-1]}.zip", sample=raw)
        x, y, nets, readme = _outputs(package)
        crop = raw[:, 3:147, 3:187] if raw.shape[-1] == 190 else raw
        np.testing.assert_allclose(x[0], np.stack([correct_plane(p, model.preprocessing) for p in crop]), rtol=1e-6)
        np.testing.assert_allclose(y, _expected(model, crop), atol=1e-5)
        with torch.inference_mode():
            for net in nets:
                np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), y, atol=1e-4)
                if normalization == "hybrid":  # the package's own normalisation of a blank field: dark, not stretched
                    prepared = nets[0].normalize(torch.from_numpy(x)).numpy()
                    np.testing.assert_allclose(prepared[0], model.prepare(crop), atol=1e-4)
        assert f'normalization = "{normalization}"' in readme and "training statistics in `model.json`" in readme
    if normalization == "hybrid":
        assert float(np.ptp(model.prepare(blank))) < 0.5  # the floor kept the noise-only field from being stretched to [0, 1]


def test_export_takes_the_sample_from_experiment_toml(model_dir, tmp_path):
    """No --sample: the first image set of MODEL/experiment.toml (read_model_dir leaves model.experiment None)."""
    from stainseg.export.bioimageio import export_bioimageio

    assert Model.load(model_dir).experiment is None
    package = export_bioimageio(model_dir, tmp_path / "m.zip")
    x, y, _, readme = _outputs(package)
    assert x.shape == (1, 1, 144, 184)
    np.testing.assert_allclose(y, _expected(Model.load(model_dir), _sample()[:, 3:147, 3:187]), atol=1e-5)
    assert readme.startswith("# stainseg model: demo (nuclei)")


def test_cells_from_nuclei_model_is_exported_as_its_nuclei_network(model_dir, tmp_path):
    """A cells model grown from nuclei (cell_method "nuclei") ships its nuclei network, described as such: name, tags,
    output and README say nuclei; the README names the CellExtent step with the stored parameters, which the package
    does not run; rdf config.stainseg records both objects and the extent. A plain model says nothing of it."""
    import json

    from bioimageio.spec import load_description

    from stainseg.export.bioimageio import export_bioimageio
    from stainseg.groundtruth.extent import CellExtent

    cfg = _experiment(tmp_path / "exp")
    cfg.objects = "cells"
    model = Model.new(["BF"], cfg=cfg)
    extent = CellExtent(spline_grid=4, spline_iterations=3, sigma=3.0, smoothing=1.5, min_area_fraction=0.4)  # not the defaults
    model.cell_extent = extent
    folder = model.save(tmp_path / "model")
    loaded = Model.load(folder)
    assert loaded.objects == "cells" and loaded.network_objects == "nuclei" and loaded.cell_extent == extent
    package = export_bioimageio(folder, tmp_path / "cells.zip", sample=_sample())

    descr = load_description(package)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary.format()
    assert descr.name.startswith("stainseg nuclei ") and "nuclei" in descr.tags and "cells" not in descr.tags
    assert "Segments nuclei" in descr.description and "bioimage.io consumers do not run" in descr.description
    output = descr.outputs[0].description
    assert "of nuclei" in output and "CellExtent" in output and "not this package" in output
    facts = descr.config.stainseg
    assert facts["objects"] == "cells" and facts["network_objects"] == "nuclei"
    assert facts["cell_extent"] == extent.to_dict() == json.loads((folder / "model.json").read_text())["cell_extent"]

    x, y, _, readme = _outputs(package)
    np.testing.assert_allclose(y, _expected(loaded, _sample()[:, 3:147, 3:187]), atol=1e-5)  # the network's nuclei probabilities
    assert readme.startswith("# stainseg model: demo (nuclei network of a cells model)")
    assert "of softmax class probabilities of **nuclei**" in readme
    assert "## Cells are grown from the nuclei in stainseg, not in this package" in readme
    flat = " ".join(readme.split())
    for fact in ("do **not** run that step", "method `nuclei+texture`", "spline background (grid 4, 3 iterations)", "pre-smoothing of 1.5 px",
                 "Gaussian window of 3.0 px", "smaller than 0.4 of the field's median nucleus area"):
        assert fact in flat, fact
    # the model this test module shares (a nuclei network of a nuclei model) carries no such section
    plain = load_description(export_bioimageio(model_dir, tmp_path / "plain.zip", sample=_sample()))
    assert plain.config.stainseg == {"objects": "nuclei", "network_objects": "nuclei"}
    with zipfile.ZipFile(tmp_path / "plain.zip") as zf:
        assert "CellExtent" not in zf.read("README.md").decode()


def test_export_without_sample_or_experiment_asks_for_a_sample(tmp_path):
    from stainseg.export.bioimageio import export_bioimageio

    folder = Model.new(["BF"]).save(tmp_path / "model")
    assert not (folder / "experiment.toml").exists()
    with pytest.raises(StainsegError, match="--sample"):
        export_bioimageio(folder, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


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
    if zipfile.is_zipfile(package) and "weights.onnx" in zipfile.ZipFile(package).namelist():  # ONNX weights (needs onnxruntime)
        assert any("Reproduce test outputs" in n and "onnx" in n for n in names), names
