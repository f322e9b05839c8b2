"""The network: output shapes for any size and channel count, softmax, summary."""

from __future__ import annotations

import pytest
import torch

from stainseg.config import ModelConfig
from stainseg.network import StainNet, count_parameters, describe, probabilities


@pytest.mark.parametrize("height,width", [(37, 53), (240, 240), (481, 300), (8, 9)])
@pytest.mark.parametrize("head,classes", [("2class", 2), ("3class", 3)])
def test_forward_keeps_size(height, width, head, classes):
    torch.manual_seed(0)
    net = StainNet(ModelConfig(in_channels=2, head=head)).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, height, width))
    assert net.n_classes == classes
    assert out.shape == (1, classes, height, width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 8])
def test_any_number_of_input_channels(channels):
    net = StainNet(ModelConfig(in_channels=channels)).eval()
    with torch.no_grad():
        out = net(torch.randn(2, channels, 64, 40))
    assert out.shape[0] == 2 and out.shape[-2:] == (64, 40)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, channels + 1, 64, 40))


def test_depth_and_width_are_config_choices():
    small = StainNet(ModelConfig(in_channels=1, base_width=4, depth=2, residual_blocks=1))
    large = StainNet(ModelConfig(in_channels=1, base_width=8, depth=4, residual_blocks=4))
    assert count_parameters(small) < count_parameters(large)
    with torch.no_grad():
        assert large.eval()(torch.randn(1, 1, 50, 70)).shape == (1, large.n_classes, 50, 70)


def test_paper_scale_and_summary():
    net = StainNet(ModelConfig(in_channels=3, head="2class"))
    # the paper-like prototype in PERF-NOTES: 79 k parameters, 15.6 kFLOP per pixel
    assert 60_000 < count_parameters(net) < 100_000
    text = describe(net, (3, 240, 240))
    assert "trainable parameters: 78," in text
    assert "FLOPs per pixel: 15.6 k" in text


def test_output_is_translation_consistent_inside():
    """A fully convolutional net: cropping the input crops the output (away from borders)."""
    torch.manual_seed(1)
    net = StainNet(ModelConfig(in_channels=1)).eval()
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        full = net(x)
        part = net(x[..., 64:192, 64:192])  # offset is a multiple of 2**depth
    # the receptive field reaches about 56 px: compare pixels farther than that from the crop's border
    assert torch.allclose(full[..., 124:132, 124:132], part[..., 60:68, 60:68], atol=1e-4)


def test_probabilities_sum_to_one():
    logits = torch.randn(2, 3, 5, 7, dtype=torch.bfloat16)
    prob = probabilities(logits)
    assert prob.dtype == torch.float32
    assert torch.allclose(prob.sum(1), torch.ones(2, 5, 7), atol=1e-5)
    assert (prob >= 0).all()
