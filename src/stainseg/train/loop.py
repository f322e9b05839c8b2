"""The training loop (METHOD.md section 4): weighted softmax loss, validation, checkpoints, resume.

Two presets (``TrainConfig.preset``); ``iterations``, ``crop_size``, ``batch_size`` and
``learning_rate`` of the config override them:

``paper``
    480 x 480 crops, batch 4 (the paper does not give it), RMSProp lr 1e-3 divided by 10 every
    5000 iterations, 60 000 iterations (5.5 h on a Titan X).
``fast`` (default)
    128 x 128 crops, batch 4, AdamW lr 3e-3 with 5 % linear warm-up then cosine decay
    (one-cycle style), 1000 iterations, bfloat16 autocast on CPUs with native bf16 (else fp32) and
    channels_last, validation every 50 iterations (at most 8 validation images, centre 256 x 256), trained
    to the end and the last weights kept (the schedule's ``keep_best`` / ``patience`` switch to the
    best validated weights and early stopping). See benchmarks/train_speed.py for the measurement.

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

from stainseg.config import ExperimentConfig
from stainseg.errors import StainsegError
from stainseg.train import distributed
from stainseg.train.schedule import PRESETS, Schedule, learning_rate_at, resolve_schedule
from stainseg.network import StainNet, choose_device, native_bf16
from stainseg.train.data import TrainData, check_inputs, prepare_data, sample_batch
from stainseg.train.state import (CHECKPOINT, LoopState, Session, TimeBudget, load_checkpoint, record_validation,
                                  save_checkpoint)

__all__ = ["Schedule", "PRESETS", "resolve_schedule", "train", "TrainResult", "validation_score", "TrainData",
           "prepare_data", "sample_batch", "train_step", "make_optimizer", "LoopState", "Session", "save_checkpoint",
           "load_checkpoint", "TimeBudget", "record_validation", "weighted_softmax_loss"]



@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the network, its history and facts about the run.

    Examples
    --------
    >>> import torch
    >>> r = TrainResult(network=torch.nn.Identity(), history=[], info={"iterations_run": 0})
    >>> r.info["iterations_run"]
    0
    """

    network: StainNet
    history: list[dict[str, Any]]
    info: dict[str, Any]


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def weighted_softmax_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per pixel times the weight image, normalised by the summed weights.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[[[4.0]], [[0.0]]]])            # (B, classes, Y, X): confident background
    >>> round(float(weighted_softmax_loss(logits, torch.zeros(1, 1, 1), torch.ones(1, 1, 1))), 4)
    0.0181
    """
    per_pixel = F.cross_entropy(logits.float(), targets.long(), reduction="none")
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-12)


def validation_score(model: StainNet, images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                     device: torch.device, use_amp: bool, channels_last: bool,
                     threshold: Optional[float] = None) -> float:
    """Mean over validation images of the mean Dice of the non-background classes.

    For the 2class head this is the foreground pixel Dice; for 3class the mean of the interior and
    boundary Dice (argmax prediction), so that it rewards separating touching objects too. Cheap:
    one forward pass per image, no instance segmentation. ``threshold`` (2class only) scores the
    foreground probability at the model's operating point instead of the argmax (0.5): with a
    foreground weight ``f`` in the loss the network's probabilities are shifted up, and
    segmentation thresholds them at ``f / (1 + f)``; scoring at 0.5 measures a foreground that
    segmentation never uses, and swings from one validation to the next with it.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from stainseg.config import ModelConfig
    >>> from stainseg.network import StainNet
    >>> target = np.zeros((32, 32), np.uint8); target[8:24, 8:24] = 1
    >>> score = validation_score(StainNet(ModelConfig()), [target[None].astype(np.float32)], [target],
    ...                          torch.device("cpu"), use_amp=False, channels_last=False)
    >>> 0.0 <= score <= 1.0
    True
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
            if threshold is not None and model.n_classes == 2:
                pred = (torch.softmax(logits.float(), 1)[0, 1] > threshold).cpu().numpy().astype(np.int64)
            else:
                pred = logits.float().argmax(1)[0].cpu().numpy()
            dice = []
            for k in range(1, model.n_classes):
                p, t = pred == k, target == k
                denominator = p.sum() + t.sum()
                dice.append(1.0 if denominator == 0 else 2.0 * np.logical_and(p, t).sum() / denominator)
            scores.append(float(np.mean(dice)))
    model.train()
    return float(np.mean(scores)) if scores else float("nan")


# ==================================================================== one optimisation step
def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
               batch: tuple[np.ndarray, np.ndarray, np.ndarray], device: torch.device,
               use_amp: bool = False, channels_last: bool = True) -> float:
    """One optimisation step on a batch from :func:`sample_batch`; returns the weighted loss.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from stainseg.config import ModelConfig
    >>> from stainseg.network import StainNet
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = StainNet(ModelConfig())
    >>> opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    >>> scaler = torch.amp.GradScaler("cuda", enabled=False)
    >>> t = np.zeros((2, 32, 32), np.int64); t[:, 8:24, 8:24] = 1
    >>> batch = (t[:, None].astype(np.float32), t, np.ones((2, 32, 32), np.float32))
    >>> loss = train_step(net, opt, scaler, batch, torch.device("cpu"))
    >>> isinstance(loss, float) and loss > 0
    True
    """
    x = torch.from_numpy(batch[0]).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.from_numpy(batch[1]).to(device)
    w = torch.from_numpy(batch[2]).to(device)
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, use_amp):
        logits = net(x)
    loss = weighted_softmax_loss(logits, t, w)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def make_optimizer(model: torch.nn.Module, sched: Schedule) -> torch.optim.Optimizer:
    """RMSProp (paper preset) or AdamW with the schedule's weight decay (fast preset).

    Examples
    --------
    >>> import torch
    >>> type(make_optimizer(torch.nn.Linear(2, 2), PRESETS["paper"])).__name__
    'RMSprop'
    """
    if sched.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=sched.learning_rate)
    return torch.optim.AdamW(model.parameters(), lr=sched.learning_rate, weight_decay=sched.weight_decay)


# ==================================================================== the loop
class _Progress:
    """The progress bar of the main process (no-op when disabled)."""

    def __init__(self, enabled: bool, state: LoopState) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.total, initial=state.iteration, desc="train", unit="it", dynamic_ncols=True)

    def total(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total

    def validated(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val_score']:.3f}")

    def step(self, state: LoopState) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if state.iteration % 10 == 0 and state.losses:
            self.bar.set_postfix(loss=f"{np.mean(state.losses):.3f}",
                                 val=f"{state.history[-1]['val_score']:.3f}" if state.history else "-")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def start_from(model: torch.nn.Module, cfg: ExperimentConfig) -> None:
    """Load ``cfg.train.start_from``'s weights into ``model`` (:mod:`stainseg.train.start`)."""
    from stainseg.train.start import start_weights

    state, arch = start_weights(cfg.resolve_path(cfg.train.start_from), cfg.model)
    if arch != cfg.model:
        raise StainsegError(f"{cfg.train.start_from}: its network ({arch}) differs from [model] ({cfg.model}); "
                            "remove the [model] settings so that the start model's architecture is used")
    model.load_state_dict(state)


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

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> lab = np.zeros((64, 64), np.int32); lab[16:32, 16:32] = 1; lab[40:56, 36:52] = 2
    >>> cfg = ExperimentConfig()
    >>> cfg.train.iterations, cfg.train.crop_size, cfg.train.batch_size, cfg.train.device = 2, 32, 1, "cpu"
    >>> result = train([(lab > 0)[None].astype(np.float32)] * 2, [lab] * 2, cfg, tempfile.mkdtemp(), progress=False)
    >>> result.info["iterations_run"], len(result.history)
    (2, 2)
    """
    out_dir = Path(out_dir)
    in_channels = check_inputs(images, labels)
    cfg = copy.deepcopy(cfg)
    cfg.model.in_channels = in_channels
    tcfg = cfg.train
    sched = resolve_schedule(cfg)
    dinfo, device = distributed.setup(choose_device(tcfg.device))
    use_amp = bool(tcfg.bfloat16) and (device.type == "cuda" or native_bf16())
    channels_last = True

    torch.manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    data = prepare_data(images, labels, cfg, rng)
    if dinfo.enabled:  # same split and initialisation on every rank, different crops
        rng = np.random.default_rng([tcfg.seed, dinfo.rank])

    model = StainNet(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, sched)
    net = distributed.wrap(model, dinfo, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    session = Session(model, optimizer, scaler, rng, LoopState(total=sched.iterations))
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.is_file():
        load_checkpoint(ckpt_path, session, cfg, device)
    elif tcfg.start_from:
        start_from(model, cfg)
    state = session.state

    def checkpoint() -> None:
        if dinfo.is_main:
            save_checkpoint(ckpt_path, session, cfg, sched)

    bar = _Progress(progress and dinfo.is_main, state)
    started = time.perf_counter() - state.elapsed_s
    budget = TimeBudget(tcfg.max_minutes, sched.iterations, sched.eval_every, start=state.iteration)
    model.train()
    while state.iteration < state.total and not state.stopped_early:
        lr = learning_rate_at(state.iteration, state.total, sched)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_batch(data, sched.batch_size, sched.crop_size, rng, tcfg.augment_rotate, tcfg.augment_intensity)
        state.losses.append(train_step(net, optimizer, scaler, batch, device, use_amp, channels_last))
        state.iteration = it = state.iteration + 1
        state.elapsed_s = time.perf_counter() - started
        total = budget.update(it, state.total, state.elapsed_s)
        if total is not None:
            state.total = distributed.agree(total, dinfo)
            bar.total(state.total)
        if it % sched.eval_every == 0 or it == state.total:
            validated = bool(data.val_images)
            score = validation_score(model, data.val_images, data.val_targets, device, use_amp, channels_last,
                                     threshold=data.foreground_factor / (1.0 + data.foreground_factor)) if validated else float("nan")
            bar.validated(record_validation(state, model, score, lr, sched.patience, validated, sched.keep_best))
        bar.step(state)
        if it % tcfg.checkpoint_every == 0 or state.stopped_early:
            checkpoint()
        if stop_after is not None and it >= stop_after and not state.stopped_early:
            bar.close()
            return None
    bar.close()
    checkpoint()

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    info = {"foreground_fraction": data.foreground_fraction, "foreground_factor": data.foreground_factor,
            "iterations_run": state.iteration, "iterations_planned": sched.iterations, "stopped_early": state.stopped_early,
            "best_val_score": state.best_score, "train_images": len(data.train_idx), "validation_images": len(data.val_images),
            "validation_indices": [int(i) for i in data.val_idx],
            "validation_strips": {str(i): c for i, c in data.strips.items()}, "device": str(device),
            "bfloat16": use_amp, "schedule": dataclasses.asdict(sched), "train_seconds": round(state.elapsed_s, 1),
            "processes": dinfo.world, "rank": dinfo.rank}
    distributed.barrier(dinfo)
    distributed.teardown(dinfo)
    return TrainResult(network=model, history=list(state.history), info=info)
