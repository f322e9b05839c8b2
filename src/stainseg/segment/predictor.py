"""Wrap a trained torch model into the tile predictor that :func:`predict_tiled` calls.

Inference-only speed-ups, each measured in ``benchmarks/segment_speed.py``:

- batch norm folded into the preceding (transposed) convolution (exact up to rounding);
- channels_last memory format on the CPU (the thin layers are memory bound);
- bfloat16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX), float32 elsewhere;
- optional ``torch.compile`` (off by default: 10-30 s warm-up; tiles have one fixed shape).

:func:`predict_whole_naive` is the unoptimised baseline: one float32 forward of the whole image.
"""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
from torch import nn

from stainseg.network import choose_device, fold_batchnorm, native_bf16


class TorchPredictor:
    """Callable ``(N, C, t, t) float32 → (N, K, t, t)`` softmax probabilities from a torch model.

    Parameters
    ----------
    model : nn.Module
        Returns logits (N, K, H, W); put in eval mode (the caller's model is not changed).
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    bfloat16 : bool
        bf16 autocast where supported natively (CPU with bf16, or CUDA); silently float32
        otherwise. :attr:`dtype` says what is used.
    channels_last : bool
        NHWC memory format (CPU and CUDA).
    fold_bn : bool
        Fold batch norm into the preceding convolutions.
    compile : bool
        ``torch.compile`` the model (use with fixed tile shapes).
    threads : int, optional
        ``torch.set_num_threads`` for CPU inference.

    Examples
    --------
    >>> from stainseg.config import ModelConfig
    >>> from stainseg.network import StainNet
    >>> f = TorchPredictor(StainNet(ModelConfig(in_channels=1)), device="cpu")
    >>> f(np.zeros((2, 1, 32, 32), np.float32)).shape    # the default 2class head
    (2, 2, 32, 32)
    """

    def __init__(
        self,
        model: nn.Module,
        device: str = "auto",
        bfloat16: bool = True,
        channels_last: bool = True,
        fold_bn: bool = True,
        compile: bool = False,
        threads: Optional[int] = None,
    ) -> None:
        self.device = choose_device(device)
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
        model = model.to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=self.memory_format)
        if self.device.type == "cuda":
            self.dtype = torch.bfloat16 if bfloat16 and torch.cuda.is_bf16_supported() else (torch.float16 if bfloat16 else torch.float32)
        else:
            self.dtype = torch.bfloat16 if bfloat16 and native_bf16() else torch.float32
        self.model = torch.compile(model, dynamic=False) if compile else model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if self.dtype != torch.float32:
                with torch.autocast(self.device.type, dtype=self.dtype):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            prob = torch.softmax(logits.float(), dim=1)
        return prob.contiguous().cpu().numpy()

    def describe(self) -> str:
        """One line: device, dtype, memory format (for run.json / logs)."""
        fmt = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        return f"{self.device.type} {str(self.dtype).replace('torch.', '')} {fmt}"


def predict_whole_naive(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Baseline: one plain float32 forward of the whole (C, Y, X) image on the CPU → (K, Y, X).

    No tiling, no batch-norm folding, no channels_last, no reduced precision.
    """
    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    with torch.inference_mode():
        prob = torch.softmax(model(x).float(), dim=1)
    return prob[0].numpy()
