"""Torch model → tile predictor: folding, memory format, precision, and its use with predict_tiled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stainseg.config import ModelConfig
from stainseg.network import StainNet, choose_device, fold_batchnorm, native_bf16
from stainseg.segment.predictor import TorchPredictor, predict_whole_naive
from stainseg.segment.tiling import predict_tiled


def _trained_like(in_channels=2, head="3class", seed=0):
    """A StainNet whose batch norms hold non-trivial statistics (as after training)."""
    torch.manual_seed(seed)
    model = StainNet(ModelConfig(in_channels=in_channels, head=head, base_width=4, depth=2, residual_blocks=1))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _batch(n=2, c=2, size=48, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, size, size)).astype(np.float32)


def test_fold_batchnorm_is_exact_and_leaves_the_model_alone():
    model = _trained_like()
    folded = fold_batchnorm(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) < n_bn // 2
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    x = torch.from_numpy(_batch())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head,k", [("2class", 2), ("3class", 3)])
def test_predictor_returns_softmax_probabilities(head, k):
    model = _trained_like(head=head)
    f = TorchPredictor(model, device="cpu")
    x = _batch()
    p = f(x)
    assert p.shape == (2, k, 48, 48) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    tol = 1e-4 if f.dtype == torch.float32 else 2e-2
    np.testing.assert_allclose(p, ref, atol=tol)
    assert model.training is False and "cpu" in f.describe()


def test_precision_follows_the_cpu():
    f = TorchPredictor(_trained_like(), device="cpu", bfloat16=True)
    assert f.dtype == (torch.bfloat16 if native_bf16() else torch.float32)
    assert TorchPredictor(_trained_like(), device="cpu", bfloat16=False).dtype == torch.float32


def test_device_resolution():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        from stainseg.errors import StainsegError

        with pytest.raises(StainsegError):
            choose_device("cuda")


def test_tiled_prediction_matches_whole_image_inside_tiles():
    """Away from seams the tiled map equals the whole-image forward (the model is local)."""
    model = _trained_like()
    image = np.random.default_rng(1).standard_normal((2, 96, 120)).astype(np.float32)
    prob, unc = predict_tiled(image, TorchPredictor(model, device="cpu"), tile_size=64, batch_size=4)
    whole = predict_whole_naive(model, image)
    assert prob.shape == whole.shape == (3, 96, 120)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-4)
    # the mean difference is small; uncertainty is where tile contexts disagree
    assert float(np.abs(prob - whole).mean()) < 0.05
    assert unc.shape == (96, 120) and 0 <= float(unc.min()) and float(unc.max()) <= 1


def test_naive_baseline_is_plain_softmax():
    model = _trained_like(head="2class")
    image = np.random.default_rng(2).standard_normal((2, 40, 56)).astype(np.float32)
    p = predict_whole_naive(model, image)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(p, ref, atol=1e-6)


@pytest.mark.slow
def test_compiled_predictor_matches_eager():
    """torch.compile (30 s warm-up on 2 cores) gives the eager probabilities for fixed tile shapes."""
    model = _trained_like()
    x = _batch(n=4, size=64)
    eager = TorchPredictor(model, device="cpu", bfloat16=False)(x)
    compiled = TorchPredictor(model, device="cpu", bfloat16=False, compile=True)
    np.testing.assert_allclose(compiled(x), eager, atol=1e-4)
    np.testing.assert_allclose(compiled(x[::-1].copy()), eager[::-1], atol=1e-4)
