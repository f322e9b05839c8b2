"""The fully convolutional network of the paper (METHOD.md section 3; Sadanandan et al. 2017, Supp. Fig. 2).

Architecture (``ModelConfig`` defaults: base_width 8, depth 3, residual_blocks 4)::

    input (C)  ─ Conv C→8 ──────────────────────────────────────────────┐ (skip, full res)
               ─ ConvPool 8→16 (1/2) ─────────────────────────────┐     │
               ─ ConvPool 16→32 (1/4) ───────────────────────┐    │     │
               ─ ConvPool 32→64 (1/8)                        │    │     │
               ─ 4 × Residual(64: 1x1→16, 3x3→16, 1x1→64, +, BN)   │     │
               ─ DeConv 64→32 (1/4) ─ + ─ BN ────────────────┘    │     │
               ─ DeConv 32→16 (1/2) ─ + ─ BN ─────────────────────┘     │
               ─ DeConv 16→8  (1)   ─ + ─ BN ───────────────────────────┘
               ─ 1x1 conv 8→K  (K = 2 background/foreground, or 3 background/interior/boundary)

The paper's Supp. Fig. 2a (exact depth) is not available; the depth, the first width and the
number of residual blocks are config choices. The residual bottleneck is 1/4 of the block width
(16 of 64 in the paper); with other widths it scales the same way (``max(1, width // 4)``).
Batch norm follows every convolution, weights use He (MSRA) initialisation.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from stainseg.config import ModelConfig

__all__ = ["StainNet", "probabilities", "describe", "n_classes_for", "choose_device", "native_bf16", "fold_batchnorm"]


def choose_device(setting: str = "auto") -> torch.device:
    """The torch device of a ``device`` setting: ``"auto"`` is CUDA when available, else the CPU.

    Asking for ``"cuda"`` without a GPU is a one-line :class:`~stainseg.errors.StainsegError`.

    Examples
    --------
    >>> choose_device("cpu").type
    'cpu'
    """
    if setting == "cuda" and not torch.cuda.is_available():
        from stainseg.errors import StainsegError

        raise StainsegError("device 'cuda' was requested but no CUDA GPU is available; use device = \"auto\" or \"cpu\"")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def native_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); emulated bf16 is slower than float32.

    Examples
    --------
    >>> isinstance(native_bf16(), bool)
    True
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older/newer torch without the private op
        return False


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm2d that directly follows a Conv2d /
    ConvTranspose2d inside an ``nn.Sequential`` folded into that convolution (exact up to rounding).

    Batch norms after additions (residual, skip sums) stay. The input model is not changed.

    Examples
    --------
    >>> net = StainNet(ModelConfig(in_channels=1)).eval()
    >>> x = torch.rand(1, 1, 32, 32)
    >>> bool(torch.allclose(net(x), fold_batchnorm(net)(x), atol=1e-4))
    True
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules.keys())
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
                module._modules[first] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
                module._modules[second] = nn.Identity()
    return model


def n_classes_for(head: str) -> int:
    """Number of output classes of a head: 2 for ``"2class"``, 3 for ``"3class"``."""
    if head == "2class":
        return 2
    if head == "3class":
        return 3
    raise ValueError(f"unknown head {head!r}; use '2class' or '3class'")


class Conv(nn.Sequential):
    """Convolution + batch norm + ReLU (``kernel`` 3 keeps the size with padding 1)."""

    def __init__(self, in_maps: int, out_maps: int, kernel: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_maps, out_maps, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_maps),
            nn.ReLU(inplace=True),
        )


class ConvPool(nn.Sequential):
    """Conv block followed by 2x2 max pooling with stride 2 (halves the size)."""

    def __init__(self, in_maps: int, out_maps: int) -> None:
        super().__init__(Conv(in_maps, out_maps), nn.MaxPool2d(2, stride=2))


class Residual(nn.Module):
    """Bottleneck residual block: 1x1 → width/4, 3x3 → width/4, 1x1 → width, added to the input, then BN."""

    def __init__(self, maps: int) -> None:
        super().__init__()
        inner = max(1, maps // 4)
        self.body = nn.Sequential(Conv(maps, inner, 1), Conv(inner, inner, 3), Conv(inner, maps, 1))
        self.norm = nn.BatchNorm2d(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.body(x))


class DeConv(nn.Module):
    """Transposed convolution (x2 up-sampling) + BN + ReLU, then two Conv blocks."""

    def __init__(self, in_maps: int, out_maps: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(in_maps, out_maps, 2, stride=2, bias=False),
            nn.BatchNorm2d(out_maps),
            nn.ReLU(inplace=True),
        )
        self.convs = nn.Sequential(Conv(out_maps, out_maps), Conv(out_maps, out_maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(self.up(x))


class StainNet(nn.Module):
    """Encoder-decoder with summed long skips and residual bottleneck blocks.

    Parameters
    ----------
    cfg : ModelConfig
        ``in_channels`` (any number), ``base_width`` (maps of the first layer), ``depth``
        (number of 2x down-samplings), ``residual_blocks`` and ``head`` ("2class"/"3class").

    Notes
    -----
    ``forward`` accepts any height and width: the input is mirror-padded to a multiple of
    ``2 ** depth`` and the logits are cropped back, so the output has the input's size.

    Examples
    --------
    >>> net = StainNet(ModelConfig(in_channels=3, head="3class"))
    >>> net(torch.zeros(1, 3, 37, 53)).shape
    torch.Size([1, 3, 37, 53])
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = dataclasses.replace(cfg)
        self.in_channels = int(cfg.in_channels)
        self.depth = int(cfg.depth)
        self.n_classes = n_classes_for(cfg.head)
        widths = [cfg.base_width * 2**level for level in range(cfg.depth + 1)]
        self.stem = Conv(self.in_channels, widths[0])
        self.down = nn.ModuleList(ConvPool(widths[i], widths[i + 1]) for i in range(cfg.depth))
        self.bottleneck = nn.Sequential(*(Residual(widths[-1]) for _ in range(cfg.residual_blocks)))
        self.up = nn.ModuleList(DeConv(widths[i + 1], widths[i]) for i in reversed(range(cfg.depth)))
        self.skip_norms = nn.ModuleList(nn.BatchNorm2d(widths[i]) for i in reversed(range(cfg.depth)))
        self.head = nn.Conv2d(widths[0], self.n_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, n_classes, H, W) for an input of shape (N, in_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_y, pad_x = (-height) % multiple, (-width) % multiple
        if pad_y or pad_x:
            mode = "reflect" if pad_y < height and pad_x < width else "replicate"
            x = F.pad(x, (0, pad_x, 0, pad_y), mode=mode)
        features = self.stem(x)
        skips = [features]
        for block in self.down:
            features = block(features)
            skips.append(features)
        skips.pop()  # the deepest map is the bottleneck input, not a skip
        features = self.bottleneck(features)
        for block, norm in zip(self.up, self.skip_norms):
            features = norm(block(features) + skips.pop())
        logits = self.head(features)
        return logits[..., :height, :width]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (axis 1) in float32: per-pixel class probabilities summing to 1."""
    return torch.softmax(logits.float(), dim=1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_pixel(model: nn.Module, in_channels: int, size: int = 256) -> float:
    """Forward FLOPs per input pixel (convolutions and matmuls, 2 FLOPs per multiply-add).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on a ``size`` x ``size`` input.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / float(size * size)


def describe(model: StainNet, in_shape: tuple[int, ...]) -> str:
    """A human-readable summary for ``MODEL/summary.txt``: layers, parameters, FLOPs per pixel.

    Parameters
    ----------
    model : StainNet
    in_shape : tuple
        Shape of one input, (C, H, W) or (N, C, H, W); used for the FLOP count and output shape.
    """
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    channels = shape[1]
    size = max(16, min(256, shape[-1], shape[-2]))
    per_pixel = flops_per_pixel(model, channels, size)
    lines = [
        "StainNet (Sadanandan et al. 2017 fully convolutional network, METHOD.md section 3)",
        f"input channels: {channels}    output classes: {model.n_classes}    down-samplings: {model.depth}",
        f"trainable parameters: {count_parameters(model):,}",
        f"forward FLOPs per pixel: {per_pixel / 1e3:.1f} k (2 FLOPs per multiply-add)",
        f"forward FLOPs for input {shape[-2]} x {shape[-1]}: {per_pixel * shape[-2] * shape[-1] / 1e9:.2f} G",
        "",
        str(model),
    ]
    return "\n".join(lines) + "\n"
