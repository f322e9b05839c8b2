"""The training loop (METHOD.md section 4): weighted softmax loss, validation, checkpoints, resume.

Two presets (``TrainConfig.preset``); ``iterations``, ``crop_size``, ``batch_size`` and
``learning_rate`` of the config override them:

``paper``
    480 x 480 crops, batch 4 (the paper does not give it), RMSProp lr 1e-3 divided by 10 every
    5000 iterations, 60 000 iterations (5.5 h on a Titan X).
``fast`` (default)
    128 x 128 crops, batch 4, AdamW lr 3e-3 with 5 % linear warm-up then cosine decay
    (one-cycle style), 1000 iterations, bfloat16 autocast on CPUs with native bf16 (else fp32) and
    channels_last, validation every 50 iterations (at most 8 validation images, centre 256 x 256), early stopping
    in the second half of the schedule after 4 validations without improvement
    and the best validated weights kept. See benchmarks/train_speed.py for the measurement.

``max_minutes`` compresses the schedule: after a short timing the total number of iterations is
set to what fits, and the learning-rate schedule is stretched over that total.

Reproducibility: all randomness comes from ``torch.manual_seed(seed)`` and
``numpy.random.default_rng(seed)``; checkpoints hold the weights, optimizer, schedule position
and both RNG states, so that on CPU a resumed run ends with exactly the weights of an
uninterrupted one (not under ``max_minutes``, whose total depends on measured speed).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stainseg.config import ExperimentConfig, config_to_dict
from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path
from stainseg.train import distributed
from stainseg.train.schedule import PRESETS, Schedule, learning_rate_at, resolve_schedule
from stainseg.train.augment import random_sample, targets_from_labels
from stainseg.network import StainNet, choose_device, native_bf16
from stainseg.train.weights import class_weight_image, foreground_factor

__all__ = ["Schedule", "PRESETS", "resolve_schedule", "train", "TrainResult", "validation_score"]

CHECKPOINT = "checkpoint.pt"


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the network, its history and facts about the run."""

    network: StainNet
    history: list[dict[str, Any]]
    info: dict[str, Any]


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def weighted_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per pixel times the weight image, normalised by the summed weights."""
    per_pixel = F.cross_entropy(logits.float(), targets.long(), reduction="none")
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-12)


def validation_score(model: StainNet, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                     device: torch.device, use_amp: bool, channels_last: bool) -> float:
    """Mean over validation images of the mean Dice of the non-background classes (argmax prediction).

    For the 2class head this is the foreground pixel Dice; for 3class the mean of the interior and
    boundary Dice, so that it rewards separating touching objects too. Cheap: one forward pass
    per image, no instance segmentation.
    """
    model.eval()
    scores = []
    with torch.no_grad():
        for image, target in zip(images, targets):
            x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, use_amp):
                logits = model(x)
            pred = logits.float().argmax(1)[0].cpu().numpy()
            dice = []
            for k in range(1, model.n_classes):
                p, t = pred == k, target == k
                denominator = p.sum() + t.sum()
                dice.append(1.0 if denominator == 0 else 2.0 * np.logical_and(p, t).sum() / denominator)
            scores.append(float(np.mean(dice)))
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


def _check_inputs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> int:
    if len(images) == 0:
        raise StainsegError("no training images; check the experiment's pattern and channels")
    if len(images) != len(labels):
        raise StainsegError(f"{len(images)} training images but {len(labels)} label images; each image needs its labels")
    channels = None
    for i, (image, label) in enumerate(zip(images, labels)):
        if image.ndim != 3:
            raise StainsegError(f"training image {i} has shape {image.shape}; expected (channels, Y, X)")
        if channels is None:
            channels = image.shape[0]
        if image.shape[0] != channels:
            raise StainsegError(f"training image {i} has {image.shape[0]} channels but image 0 has {channels}; all inputs need the same channels")
        if label.shape != image.shape[1:]:
            raise StainsegError(f"training image {i} is {image.shape[1:]} but its labels are {label.shape}; they must match")
        if not np.isfinite(image).all():
            raise StainsegError(f"training image {i} contains NaN or inf pixels; fix the input files")
    return int(channels)


def _split(n_images: int, fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    if n_images < 2 or fraction <= 0:
        return list(range(n_images)), []
    n_val = min(n_images - 1, max(1, round(fraction * n_images)))
    order = rng.permutation(n_images)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


VALIDATION_IMAGES, VALIDATION_SIZE = 8, 256
FEW_IMAGES = 4  # below this many training images, validate on a strip of each instead of whole images


def _validation_crops(images: list[np.ndarray], targets: list[np.ndarray], count: int, size: int):
    """The first ``count`` validation images, centre-cropped to at most ``size`` x ``size``."""
    out_images, out_targets = [], []
    for image, target in zip(images[:count], targets[:count]):
        ny, nx = target.shape
        y0, x0 = max(0, (ny - size) // 2), max(0, (nx - size) // 2)
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        out_images.append(np.ascontiguousarray(image[(slice(None),) + window]))
        out_targets.append(target[window])
    return out_images, out_targets


def _comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    data = config_to_dict(cfg)
    train = {k: v for k, v in data["train"].items() if k not in ("max_minutes", "checkpoint_every", "device")}
    return {"train": train, "model": data["model"]}


def train(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    cfg: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: Optional[int] = None,
) -> Optional["TrainResult"]:
    """Train the network on prepared images and their automatic instance labels.

    Parameters
    ----------
    images : sequence of ndarray, shape (C, Y, X), float
        Network inputs, prepared by :meth:`stainseg.Model.prepare` (the preprocessing segmentation uses).
    labels : sequence of ndarray, shape (Y, X), int
        Instance labels (0 = background), one per image.
    cfg : ExperimentConfig
        ``cfg.train`` (schedule, seed, device ...) and ``cfg.model`` (architecture). The number of
        input channels is taken from the images.
    out_dir : str or Path
        Where ``checkpoint.pt`` is kept during training (the model folder).
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists (it must come from the same config).
    progress : bool
        Show a progress bar (loss, validation score, ETA).
    stop_after : int, optional
        Stop after this many iterations as if the process were killed (no model files written):
        for testing resume.

    Returns
    -------
    TrainResult or None
        The trained network (best validated weights, CPU, eval mode), the history (one row per
        validation point with ``iteration``, ``loss``, ``learning_rate``, ``val_score``,
        ``elapsed_s``) and training facts; None when ``stop_after`` stopped it.
    """
    out_dir = Path(out_dir)
    in_channels = _check_inputs(images, labels)
    cfg = copy.deepcopy(cfg)
    cfg.model.in_channels = in_channels
    tcfg = cfg.train
    sched = resolve_schedule(cfg)
    device = choose_device(tcfg.device)
    dinfo, device = distributed.setup(device)
    use_amp = bool(tcfg.bfloat16) and (device.type == "cuda" or native_bf16())
    channels_last = True

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    # ---------------------------------------------------------------- data
    images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
    targets = [targets_from_labels(lab, cfg.model.head, separate_touching=cfg.train.separate_touching) for lab in labels]
    train_idx, val_idx = _split(len(images), tcfg.validation_fraction, rng)
    regions: list[Optional[tuple[slice, slice]]] = [None] * len(images)
    val_images: list[np.ndarray] = [images[i] for i in val_idx]
    val_targets: list[np.ndarray] = [targets[i] for i in val_idx]
    strips: dict[int, int] = {}
    if len(images) < FEW_IMAGES and tcfg.validation_fraction > 0:
        # few images: train on all of them and validate on a strip on the right of each (fraction wide, >= 32 px)
        train_idx, val_images, val_targets = list(range(len(images))), [], []
        for i, image in enumerate(images):
            nx = image.shape[-1]
            cut = nx - max(32, int(round(tcfg.validation_fraction * nx)))
            if cut >= 32:
                strips[i] = cut
                regions[i] = (slice(None), slice(0, cut))
                val_images.append(image[:, :, cut:])
                val_targets.append(targets[i][:, cut:])
        val_idx = []
    # validation must stay cheap: at most 8 images, centre crops of at most 256 x 256 (~0.5 Mpx)
    val_images, val_targets = _validation_crops(val_images, val_targets, VALIDATION_IMAGES, VALIDATION_SIZE)
    if dinfo.enabled:  # same split and initialisation on every rank, different crops
        rng = np.random.default_rng([tcfg.seed, dinfo.rank])
    fg_fraction = float(np.mean([np.mean(targets[i] > 0) for i in train_idx]))
    factor = foreground_factor(tcfg.foreground_factor, fg_fraction)
    weight_images = [class_weight_image(t > 0, factor) for t in targets]

    # ---------------------------------------------------------------- model, optimiser
    model = StainNet(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if sched.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(model.parameters(), lr=sched.learning_rate)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=sched.learning_rate, weight_decay=sched.weight_decay)
    net = distributed.wrap(model, dinfo, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())

    state: dict[str, Any] = {"iteration": 0, "total": sched.iterations, "best_score": -1.0, "best_state": None,
                             "stale": 0, "history": [], "elapsed_s": 0.0, "losses": [], "stopped_early": False}
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.is_file():
        try:
            ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        except Exception as exc:  # corrupt or truncated file
            raise StainsegError(f"cannot read the checkpoint ({type(exc).__name__}); delete it to start over", ckpt_path) from None
        if ckpt.get("config") != _comparable(cfg):
            raise StainsegError("checkpoint was made with different training/model settings; use the same config or delete it to start over", ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        state.update(ckpt["state"])

    def save_checkpoint() -> None:
        if not dinfo.is_main:
            return
        payload = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state,
            "state": state, "config": _comparable(cfg), "schedule": dataclasses.asdict(sched),
        }
        with atomic_path(ckpt_path) as tmp:
            torch.save(payload, tmp)

    # ---------------------------------------------------------------- loop
    bar = None
    if progress and dinfo.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=state["total"], initial=state["iteration"], desc="train", unit="it", dynamic_ncols=True)
    started = time.perf_counter() - state["elapsed_s"]
    timed_from: Optional[tuple[int, float]] = None
    session_start = state["iteration"]
    model.train()
    stopped_early = bool(state["stopped_early"])
    while state["iteration"] < state["total"] and not stopped_early:
        it = state["iteration"]
        lr = learning_rate_at(it, state["total"], sched)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_x, batch_t, batch_w = [], [], []
        for _ in range(sched.batch_size):
            i = train_idx[int(rng.integers(len(train_idx)))]
            x, (t, w) = random_sample(images[i], [targets[i], weight_images[i]], sched.crop_size, rng, regions[i])
            batch_x.append(x), batch_t.append(t), batch_w.append(w)
        x = torch.from_numpy(np.stack(batch_x)).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.from_numpy(np.stack(batch_t)).to(device)
        w = torch.from_numpy(np.stack(batch_w)).to(device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, use_amp):
            logits = net(x)
        loss = weighted_softmax_loss(logits, t, w)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        state["losses"].append(float(loss.detach()))
        state["iteration"] = it = it + 1
        state["elapsed_s"] = time.perf_counter() - started

        # compress the schedule to max_minutes: estimate after a short timing, re-estimate at every
        # validation from the average speed so far (validation time included; the CPU may be shared)
        if tcfg.max_minutes is not None:
            if timed_from is None:
                if it >= session_start + 5 or it == state["total"]:  # skip warm-up iterations (also after resume)
                    timed_from = (it, time.perf_counter())
            elif timed_from is not None and (it == timed_from[0] + 10 or it % sched.eval_every == 0):
                per_it = (time.perf_counter() - timed_from[1]) / (it - timed_from[0])
                budget = tcfg.max_minutes * 60.0 * 0.95 - state["elapsed_s"]  # 5 % for the last validation and saving
                state["total"] = distributed.agree(max(it, min(sched.iterations, it + int(budget / per_it))), dinfo)
                if bar is not None:
                    bar.total = state["total"]

        if it % sched.eval_every == 0 or it == state["total"]:
            score = validation_score(model, val_images, val_targets, device, use_amp, channels_last) if val_images else float("nan")
            row = {"iteration": it, "loss": float(np.mean(state["losses"])), "learning_rate": lr,
                   "val_score": score, "elapsed_s": round(state["elapsed_s"], 2)}
            state["history"].append(row)
            state["losses"] = []
            if val_images:
                if score > state["best_score"]:
                    state["best_score"], state["stale"] = score, 0
                    state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    state["stale"] += 1
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{score:.3f}")
            # early stopping only in the second half of the schedule (the cosine decay does most of its work late)
            if sched.patience is not None and val_images and state["stale"] >= sched.patience and it >= state["total"] // 2:
                stopped_early = state["stopped_early"] = True
        if bar is not None:
            bar.update(1)
            if it % 10 == 0 and state["losses"]:
                bar.set_postfix(loss=f"{np.mean(state['losses']):.3f}",
                                val=f"{state['history'][-1]['val_score']:.3f}" if state["history"] else "-")
        if it % tcfg.checkpoint_every == 0 or stopped_early:
            save_checkpoint()
        if stopped_early:
            break
        if stop_after is not None and it >= stop_after:
            if bar is not None:
                bar.close()
            return None
    if bar is not None:
        bar.close()
    save_checkpoint()

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    info = {"foreground_fraction": fg_fraction, "foreground_factor": factor, "iterations_run": state["iteration"],
            "iterations_planned": sched.iterations, "stopped_early": stopped_early, "best_val_score": state["best_score"],
            "train_images": len(train_idx), "validation_images": len(val_images),
            "validation_indices": [int(i) for i in val_idx], "validation_strips": {str(i): c for i, c in strips.items()}, "device": str(device),
            "bfloat16": use_amp, "schedule": dataclasses.asdict(sched), "train_seconds": round(state["elapsed_s"], 1),
            "processes": dinfo.world, "rank": dinfo.rank}
    distributed.barrier(dinfo)
    distributed.teardown(dinfo)
    return TrainResult(network=model, history=list(state["history"]), info=info)
