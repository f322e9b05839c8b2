"""ONNX engine: export a StainNet, run it without torch, and agree with the torch predictor."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
pytest.importorskip("onnx", reason="onnx is not installed (needed to export; pip install onnx)")
torch = pytest.importorskip("torch")

from scipy import ndimage as ndi  # noqa: E402

from stainseg.config import ModelConfig  # noqa: E402
from stainseg.errors import StainsegError  # noqa: E402
from stainseg.preprocess import normalize  # noqa: E402
from stainseg.segment.onnx_engine import OnnxPredictor, export_onnx  # noqa: E402
from stainseg.segment.predictor import TorchPredictor  # noqa: E402
from stainseg.segment.tiling import predict_tiled  # noqa: E402

try:
    from stainseg.network import StainNet
except ImportError:  # older layout
    from stainseg.train.model import StainNet


def _trained_like(in_channels: int, seed: int = 0) -> "torch.nn.Module":
    """A small StainNet whose batch norms hold non-trivial statistics (as after training)."""
    torch.manual_seed(seed)
    model = StainNet(ModelConfig(in_channels=in_channels, head="3class", base_width=4, depth=3, residual_blocks=2))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _synthetic_nuclei(shape=(300, 420), seed=0) -> np.ndarray:
    """Bright round blobs on an uneven background with noise, normalised like real input: (1, Y, X)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros(shape, np.float32)
    centres[rng.integers(0, shape[0], 60), rng.integers(0, shape[1], 60)] = 1
    blobs = ndi.gaussian_filter(centres, 6) * 900
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    background = 200 + 0.3 * xx + 0.1 * yy
    raw = background + 400 * np.clip(blobs, 0, 1) + rng.normal(0, 10, shape)
    return normalize(raw[None].astype(np.float32)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _trained_like(in_channels=1)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", in_channels=1)
    return model, path


def test_export_writes_one_file_and_records_the_shape_facts(exported):
    _, path = exported
    assert path.is_file() and path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temporaries left
    predictor = OnnxPredictor(path, threads=1)
    assert (predictor.in_channels, predictor.n_classes, predictor.multiple) == (1, 3, 8)
    assert predictor.describe().startswith("onnxruntime ") and "float32" in predictor.describe()


def test_matches_torch_on_synthetic_nuclei_tiles(exported):
    model, path = exported
    image = _synthetic_nuclei()
    tiles = np.stack([image[:, y : y + 240, x : x + 240] for y, x in [(0, 0), (60, 180), (30, 90)]])
    expected = TorchPredictor(model, device="cpu", bfloat16=False)(tiles)
    got = OnnxPredictor(path, threads=2)(tiles)
    assert got.shape == expected.shape == (3, 3, 240, 240)
    assert np.abs(got - expected).max() < 1e-4
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.9999


@pytest.mark.data
def test_matches_torch_on_a_bbbc039_crop(exported, bbbc039):
    import tifffile

    model, path = exported
    raw = tifffile.imread(sorted((bbbc039 / "images").glob("*.tif"))[0]).astype(np.float32)
    image = normalize(raw[None]).astype(np.float32)
    tiles = np.stack([image[:, :240, :240], image[:, 280:520, 456:696]])
    expected = TorchPredictor(model, device="cpu", bfloat16=False)(tiles)
    got = OnnxPredictor(path)(tiles)
    assert np.abs(got - expected).max() < 1e-4


def test_odd_sizes_are_padded_like_the_network(exported):
    model, path = exported
    predictor = OnnxPredictor(path, threads=1)
    image = _synthetic_nuclei((77, 301))
    for shape in [(37, 53), (5, 300), (77, 301)]:
        x = np.ascontiguousarray(image[None, :, : shape[0], : shape[1]])
        with torch.inference_mode():
            expected = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
        got = predictor(x)
        assert got.shape == expected.shape == (1, 3) + shape
        assert np.abs(got - expected).max() < 1e-4


def test_predict_tiled_with_onnx_equals_torch(exported):
    model, path = exported
    image = _synthetic_nuclei((300, 420))
    ours, unc_ours = predict_tiled(image, OnnxPredictor(path), tile_size=96, batch_size=4)
    theirs, unc_theirs = predict_tiled(image, TorchPredictor(model, device="cpu", bfloat16=False), tile_size=96, batch_size=4)
    assert ours.shape == (3, 300, 420)
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.abs(unc_ours - unc_theirs).max() < 1e-4


def test_wrong_channel_count_is_a_one_line_error(exported):
    _, path = exported
    with pytest.raises(StainsegError) as info:
        OnnxPredictor(path)(np.zeros((1, 3, 64, 64), np.float32))
    assert "\n" not in str(info.value) and str(path) in str(info.value) and "(N, 1, Y, X)" in str(info.value)


def test_corrupt_onnx_file_is_a_one_line_error_naming_it(exported, tmp_path):
    _, good = exported
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])  # truncated, as after a failed copy
    with pytest.raises(StainsegError) as info:
        OnnxPredictor(bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(bad)) and "export it again" in message
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(StainsegError, match="garbage.onnx"):
        OnnxPredictor(garbage)
    with pytest.raises(StainsegError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_importing_the_engine_does_not_import_torch():
    code = "import stainseg.segment.onnx_engine, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_segmenting_without_torch_in_a_fresh_process(exported):
    """The whole tiled inference runs with only numpy + onnxruntime imported."""
    _, path = exported
    code = (
        "import sys, numpy as np\n"
        "from stainseg.segment.onnx_engine import OnnxPredictor\n"
        "from stainseg.segment.tiling import predict_tiled\n"
        f"prob, _ = predict_tiled(np.zeros((1, 100, 130), np.float32), OnnxPredictor({str(path)!r}), tile_size=64)\n"
        "assert prob.shape == (3, 100, 130)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
