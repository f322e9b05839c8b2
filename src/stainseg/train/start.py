"""Start training from the weights of an existing model (fine-tuning, ``[train] start_from``).

A lab with one field of a new kind of image has a few dozen nuclei to learn from, too few to
train a network from scratch. A network trained on other label-free images of the same modality
may already know what a nucleus looks like there; training from its weights adapts it to the new
images. (On the one isl z-stack field, starting from a HeLa phase model did not help: 12.5 % of
the held-out nuclei with F >= 0.6 either way; docs/results.md.)

The architecture comes from the start model (its ``base_width``, ``depth``, ``residual_blocks``
and ``head``); the number of input planes may differ: the first convolution's weights are then
summed over the start model's planes and spread evenly over the new ones, so that an image whose
planes are all alike gives the start model's response to one such plane.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stainseg.config import ModelConfig
from stainseg.errors import StainsegError

__all__ = ["START_LAYER", "adapt_state", "start_weights"]

#: The one parameter whose shape depends on the number of input planes.
START_LAYER = "stem.0.weight"


def adapt_state(state: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """A copy of a :class:`~stainseg.network.StainNet` state dict for ``in_channels`` input planes.

    Parameters
    ----------
    state : dict
        The start network's ``state_dict()``.
    in_channels : int
        Input planes of the network to train.

    Returns
    -------
    dict
        The same tensors; the first convolution's weight (``out, C, k, k``) becomes
        ``(out, in_channels, k, k)``: summed over ``C``, divided by ``in_channels``.

    Examples
    --------
    >>> import torch
    >>> s = adapt_state({START_LAYER: torch.ones(4, 1, 3, 3)}, 2)
    >>> tuple(s[START_LAYER].shape), float(s[START_LAYER][0, 0, 0, 0])
    ((4, 2, 3, 3), 0.5)
    """
    out = dict(state)
    weight = state[START_LAYER]
    if weight.shape[1] != in_channels:
        summed = weight.sum(dim=1, keepdim=True)
        out[START_LAYER] = (summed / in_channels).repeat(1, in_channels, 1, 1).contiguous()
    return out


def start_weights(path: str | Path, model_cfg: ModelConfig) -> tuple[dict[str, Any], ModelConfig]:
    """The start model's weights and the architecture to train, for ``[train] start_from = path``.

    Parameters
    ----------
    path : str or Path
        A model folder written by stainseg (``model.json`` + ``model.pt``).
    model_cfg : ModelConfig
        The run's ``[model]`` settings; its ``in_channels`` is kept, the rest comes from the start model.

    Returns
    -------
    (state, ModelConfig)
        A state dict for :class:`~stainseg.network.StainNet` with ``model_cfg.in_channels`` planes,
        and the architecture it fits.

    Raises
    ------
    StainsegError
        When ``path`` is not a readable stainseg model folder.
    """
    from stainseg.model import Model

    folder = Path(path)
    if not (folder / "model.json").is_file():
        raise StainsegError(f"{folder}: [train] start_from must be a stainseg model folder (with model.json and model.pt); "
                            "give the folder a previous training wrote")
    try:
        start = Model.load(folder, device="cpu", engine="torch")
        network = start.network
    except StainsegError:
        raise
    except Exception as exc:  # a truncated model.pt, a foreign file
        raise StainsegError(f"{folder}: cannot read its network weights to start from ({exc.__class__.__name__}: {exc}); "
                            "train that model again or start from another folder") from exc
    arch = dataclasses.replace(network.cfg, in_channels=int(model_cfg.in_channels))
    return adapt_state(network.state_dict(), arch.in_channels), arch
