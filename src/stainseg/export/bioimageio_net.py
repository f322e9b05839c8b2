"""The network of a bioimage.io package: stainseg's normalisation and StainNet in one torch module.

:class:`BioimageioStainNet` takes the illumination-corrected input, normalises it as
:meth:`stainseg.Model.prepare` does (the model's ``preprocessing.normalization`` and training
statistics, as keyword arguments) and returns softmax class probabilities; it is the architecture
``rdf.yaml`` names (imported from :mod:`stainseg.export.bioimageio`). :class:`OnnxStainNet` is the
same with its quantiles by sorting, for the ONNX weights.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from stainseg.config import ModelConfig
from stainseg.network import StainNet

__all__ = ["BioimageioStainNet", "OnnxStainNet", "normalization_kwargs", "architecture_kwargs", "wrap_network", "CLASS_NAMES"]

CLASS_NAMES = {2: ["background", "foreground"], 3: ["background", "interior", "boundary"]}


def normalization_kwargs(preprocessing: Any, in_channels: int) -> dict[str, Any]:
    """:class:`BioimageioStainNet` keyword arguments for the normalisation of a model's :class:`~stainseg.preprocess.Preprocessing`.

    Per plane, the same choice as :func:`stainseg.preprocess.prepare`: ``floor`` is the hybrid
    lower bound of ``(hi - lo) / median level`` (0: none), ``fixed`` planes use
    ``relative_low`` / ``relative_high`` times the median level instead of their own percentiles.

    Examples
    --------
    >>> from stainseg.preprocess import Preprocessing
    >>> normalization_kwargs(Preprocessing(normalization="image"), 2)["floor"]
    [0.0, 0.0]
    """
    from stainseg.preprocess import FLOOR_FRACTION

    stats = preprocessing.statistics if len(preprocessing.statistics) == in_channels else []
    floor, fixed, rel_low, rel_high = [0.0] * in_channels, [False] * in_channels, [0.0] * in_channels, [1.0] * in_channels
    for c, st in enumerate(stats):
        if not st.images or preprocessing.normalization == "image":
            continue
        if preprocessing.normalization == "hybrid":
            floor[c] = float(FLOOR_FRACTION * st.min_relative_range)
        else:
            fixed[c], rel_low[c], rel_high[c] = True, float(st.relative_low), float(st.relative_high)
    return {"normalization": str(preprocessing.normalization), "low": float(preprocessing.low), "high": float(preprocessing.high),
            "floor": floor, "fixed": fixed, "relative_low": rel_low, "relative_high": rel_high}


class BioimageioStainNet(nn.Module):
    """StainNet for bioimage.io: illumination-corrected input → stainseg's normalisation → network → softmax.

    Parameters
    ----------
    in_channels, base_width, depth, residual_blocks : int
        :class:`stainseg.config.ModelConfig` fields.
    head : str
        ``"2class"`` or ``"3class"``.
    normalization, low, high, floor, fixed, relative_low, relative_high
        From :func:`normalization_kwargs` (the default is ``"image"``: each plane's own 0.5th and
        99.5th percentiles).

    Notes
    -----
    ``net`` is the stainseg network unchanged, so ``net.*`` in the state dict are the weights of
    ``MODEL/model.pt`` (the normalisation constants are not in the state dict: they are keyword
    arguments). Percentiles and medians are taken over every pixel; stainseg takes them from a
    regular ~512 x 512 subsample, which is every pixel up to 1023 px a side and agrees to ~1e-3 above.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 8, depth: int = 3, residual_blocks: int = 4,
                 head: str = "3class", normalization: str = "image", low: float = 0.5, high: float = 99.5,
                 floor: Optional[Sequence[float]] = None, fixed: Optional[Sequence[bool]] = None,
                 relative_low: Optional[Sequence[float]] = None, relative_high: Optional[Sequence[float]] = None,
                 downsample: int = 1) -> None:
        super().__init__()
        self.downsample = int(downsample)
        self.net = StainNet(ModelConfig(in_channels=in_channels, base_width=base_width, depth=depth,
                                        residual_blocks=residual_blocks, head=head))
        self.normalization = normalization
        per_plane = {"floor": (floor, 0.0), "fixed": (fixed, False), "relative_low": (relative_low, 0.0),
                     "relative_high": (relative_high, 1.0)}
        for name, (values, default) in per_plane.items():
            values = list(values) if values is not None else [default] * in_channels
            if len(values) != in_channels:
                raise ValueError(f"{name} has {len(values)} values for {in_channels} input channels")
            dtype = torch.bool if name == "fixed" else torch.float32
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)
        self.register_buffer("quantiles", torch.tensor([low / 100.0, high / 100.0, 0.5], dtype=torch.float32), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """stainseg's normalisation of a (N, C, Y, X) illumination-corrected input (:func:`stainseg.preprocess.prepare`)."""
        q = torch.quantile(x.flatten(2), self.quantiles, dim=2)  # (3, N, C); linear interpolation, as numpy
        lo, hi, level = q[0], q[1], q[2].abs()
        lo = torch.where(self.fixed, self.relative_low * level, lo)
        hi = torch.where(self.fixed, self.relative_high * level, hi)
        hi = torch.maximum(hi, lo + self.floor * level)
        span = hi - lo
        valid = span > 0  # a constant plane becomes zeros
        y = ((x - lo[:, :, None, None]) / torch.where(valid, span, torch.ones_like(span))[:, :, None, None]).clamp(0.0, 1.0)
        y = y - torch.quantile(y.flatten(2), 0.5, dim=2)[:, :, None, None]
        return torch.where(valid[:, :, None, None], y, torch.zeros_like(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, K, Y, X) from a (N, C, Y, X) illumination-corrected input (any intensity scale).

        A model with a working scale (``downsample = f > 1``) averages ``f x f`` blocks after the
        normalisation and interpolates its probabilities back bilinearly between the block centres
        (:func:`stainseg.scale.upsample_linear`; Y and X multiples of ``f``)."""
        y = self.normalize(x.float())
        if self.downsample > 1:
            y = torch.nn.functional.avg_pool2d(y, self.downsample)
        p = torch.softmax(self.net(y).float(), dim=1)
        if self.downsample > 1:
            p = torch.nn.functional.interpolate(p, scale_factor=float(self.downsample), mode="bilinear", align_corners=False)
        return p


def _sorted_quantile(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(values, q, dim=2)`` (linear interpolation) by sorting: ONNX has no quantile op, but sort (TopK) and gather.

    The element count is taken from the tensor's shape at run time, so the exported graph holds for any image size.
    """
    from torch.onnx.operators import shape_as_tensor

    ordered = torch.sort(values, dim=2)[0]
    last = (shape_as_tensor(values)[2] - 1).to(values.dtype)
    pos = q.to(values.dtype) * last  # (Q,)
    lo = torch.floor(pos)
    frac = (pos - lo)[:, None, None]
    lo_i = lo.long()
    hi_i = torch.minimum(lo_i + 1, last.long())
    below = ordered.index_select(2, lo_i).permute(2, 0, 1)  # (Q, N, C)
    above = ordered.index_select(2, hi_i).permute(2, 0, 1)
    return below + (above - below) * frac


class OnnxStainNet(BioimageioStainNet):
    """:class:`BioimageioStainNet` with its quantiles by sorting, for the ONNX weights (same outputs to ~1e-6)."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        q = _sorted_quantile(x.flatten(2), self.quantiles)
        lo, hi, level = q[0], q[1], q[2].abs()
        lo = torch.where(self.fixed, self.relative_low * level, lo)
        hi = torch.where(self.fixed, self.relative_high * level, hi)
        hi = torch.maximum(hi, lo + self.floor * level)
        span = hi - lo
        valid = span > 0
        y = ((x - lo[:, :, None, None]) / torch.where(valid, span, torch.ones_like(span))[:, :, None, None]).clamp(0.0, 1.0)
        y = y - _sorted_quantile(y.flatten(2), self.quantiles[2:])[0][:, :, None, None]
        return torch.where(valid[:, :, None, None], y, torch.zeros_like(y))


def architecture_kwargs(model: Any) -> dict[str, Any]:
    """The :class:`BioimageioStainNet` keyword arguments of a :class:`stainseg.Model` (network shape and normalisation).

    They are the architecture's ``kwargs`` in ``rdf.yaml``.

    Examples
    --------
    >>> from stainseg.model import Model
    >>> kwargs = architecture_kwargs(Model.new(["BF"]))
    >>> kwargs["in_channels"], kwargs["head"], kwargs["normalization"]
    (1, '2class', 'hybrid')
    """
    cfg = model.network_config
    kwargs = {"in_channels": model.in_channels, "base_width": cfg.base_width, "depth": cfg.depth,
              "residual_blocks": cfg.residual_blocks, "head": cfg.head, **normalization_kwargs(model.preprocessing, model.in_channels)}
    if model.preprocessing.downsample > 1:  # only then, so packages of full-resolution models keep their kwargs
        kwargs["downsample"] = int(model.preprocessing.downsample)
    return kwargs


def wrap_network(model: Any) -> BioimageioStainNet:
    """The model's network in a :class:`BioimageioStainNet` (its weights, in eval mode); ``init_kwargs`` holds its keyword arguments.

    Examples
    --------
    >>> import torch
    >>> from stainseg.model import Model
    >>> wrapped = wrap_network(Model.new(["BF"]))
    >>> tuple(wrapped(torch.rand(1, 1, 32, 32)).shape)
    (1, 2, 32, 32)
    """
    kwargs = architecture_kwargs(model)
    wrapped = BioimageioStainNet(**kwargs)
    wrapped.init_kwargs = kwargs  # type: ignore[assignment]
    wrapped.net.load_state_dict(model.network.state_dict())
    return wrapped.eval()
