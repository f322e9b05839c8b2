"""A trained model is a folder that fully describes how to run it (like StarDist / csbdeep).

Files (all written atomically)::

    MODEL/model.pt       network weights (state_dict)
    MODEL/config.toml    the full experiment config used for training
    MODEL/model.json     what segmentation needs: input channels and order, normalisation, head,
                         tile size, dilation, threshold, versions, seed, training facts
    MODEL/history.csv    loss and validation score during training
    MODEL/history.png    the same as a plot
    MODEL/summary.txt    architecture, parameter count, FLOPs per pixel

This module imports the network but never the training loop, so that ``segment`` can load a
model without it.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import stainseg
from stainseg.config import ExperimentConfig, load_config, save_config
from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path, write_csv, write_json, write_text
from stainseg.network import StainNet, describe

__all__ = ["save_model_dir", "load_model", "check_input", "FORMAT_VERSION"]

FORMAT_VERSION = 1
NORMALIZATION = "stainseg.preprocess.normalize"


def _history_plot(path: Path, history: Sequence[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    its = [row["iteration"] for row in history]
    ax.plot(its, [row["loss"] for row in history], color="tab:blue", label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted softmax loss", color="tab:blue")
    scores = [row.get("val_score", float("nan")) for row in history]
    if any(np.isfinite(s) for s in scores):
        ax2 = ax.twinx()
        ax2.plot(its, scores, color="tab:orange", marker="o", ms=3, label="validation Dice")
        ax2.set_ylabel("validation Dice", color="tab:orange")
        ax2.set_ylim(0, 1)
    ax.set_title("training history")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_model_dir(out_dir: str | Path, model: StainNet, cfg: ExperimentConfig,
                   history: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Write a complete model directory.

    Parameters
    ----------
    out_dir : str or Path
        The folder (created if needed).
    model : StainNet
        The trained network (its ``in_channels`` must equal ``cfg.model.in_channels``).
    cfg : ExperimentConfig
        The config used for training.
    history : sequence of dict
        Rows with ``iteration``, ``loss`` and optionally ``val_score``, ``learning_rate``, ``elapsed_s``.
    extra : dict, optional
        More facts for ``model.json`` (e.g. ``input_channels`` names, foreground factor).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(state, tmp)
    save_config(cfg, out_dir / "config.toml")
    channel_names = extra.pop("input_channels", None) or list(cfg.channels.input) or [f"channel{i}" for i in range(model.in_channels)]
    meta = {
        "format_version": FORMAT_VERSION,
        "input_channels": channel_names,
        "in_channels": model.in_channels,
        "axis_order": "CYX",
        "normalization": NORMALIZATION,
        "head": cfg.model.head,
        "n_classes": model.n_classes,
        "objects": cfg.objects,
        "tile_size": cfg.segment.tile_size,
        "dilation": cfg.dilation(),
        "threshold": cfg.segment.threshold,
        "seed": cfg.train.seed,
        "versions": {"stainseg": stainseg.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "training": extra,
    }
    write_json(out_dir / "model.json", meta)
    rows = [dict(row) for row in history]
    write_csv(out_dir / "history.csv", rows, columns=["iteration", "loss", "learning_rate", "val_score", "elapsed_s"])
    if rows:
        _history_plot(out_dir / "history.png", rows)
    write_text(out_dir / "summary.txt", describe(model, (model.in_channels, cfg.segment.tile_size, cfg.segment.tile_size)))
    return out_dir


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[StainNet, ExperimentConfig, dict[str, Any]]:
    """Load a model directory written by :func:`save_model_dir`.

    Returns
    -------
    model : StainNet
        In eval mode, on ``device``.
    cfg : ExperimentConfig
    meta : dict
        The contents of ``model.json``.

    Raises
    ------
    StainsegError
        Missing folder, missing or corrupt ``config.toml``, ``model.json`` or ``model.pt``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise StainsegError("model folder not found; give the folder written by 'stainseg train -o MODEL'", model_dir)
    meta_path, cfg_path, weights_path = model_dir / "model.json", model_dir / "config.toml", model_dir / "model.pt"
    for path in (meta_path, cfg_path, weights_path):
        if not path.is_file():
            raise StainsegError("is missing from the model folder; copy the whole folder or re-run 'stainseg train'", path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "in_channels" not in meta:
            raise ValueError("no in_channels")
    except (ValueError, UnicodeDecodeError) as exc:
        raise StainsegError(f"is corrupt ({type(exc).__name__}); re-run 'stainseg train' to rewrite the model folder", meta_path) from None
    try:
        cfg = load_config(cfg_path)
    except StainsegError as exc:
        raise StainsegError(f"model config is unreadable ({exc}); re-run 'stainseg train' to rewrite the model folder") from None
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, garbage, a pickle that is not a plain state dict ...
        raise StainsegError("weights are corrupt or truncated (not a readable PyTorch state dict); "
                            "copy the model folder again or re-run 'stainseg train'", weights_path) from None
    try:
        model = StainNet(cfg.model)
        model.load_state_dict(state)
    except Exception as exc:  # missing / unexpected keys, shape mismatch
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        reason = (lines[1] if len(lines) > 1 else lines[0])[:160]
        raise StainsegError(f"weights do not match config.toml ({reason}); keep model.pt and config.toml of one training run "
                            "or re-run 'stainseg train'", weights_path) from None
    return model.to(device).eval(), cfg, meta


def check_input(meta: dict[str, Any], image: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse an image whose channel count differs from the model's inputs (one-line StainsegError).

    Parameters
    ----------
    meta : dict
        ``model.json`` contents (from :func:`load_model`).
    image : ndarray
        (C, Y, X), or (Y, X) meaning one channel.
    path : str or Path, optional
        The image file, named in the message.
    """
    channels = 1 if image.ndim == 2 else image.shape[0] if image.ndim == 3 else None
    expected = int(meta["in_channels"])
    names = ", ".join(meta.get("input_channels", [])) or f"{expected} channels"
    if channels is None:
        raise StainsegError(f"image has shape {image.shape}; the model expects (channels, Y, X) with {expected} channel(s) ({names})", path)
    if channels != expected:
        raise StainsegError(f"image has {channels} channel(s) but the model was trained on {expected} ({names}); "
                            "give a stack with the same input channels in the same order", path)
