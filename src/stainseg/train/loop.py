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

from stainseg.config import ExperimentConfig, config_to_dict
from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path
from stainseg.train import distributed
from stainseg.train.schedule import PRESETS, Schedule, learning_rate_at, resolve_schedule
from stainseg.train.augment import jitter_intensity, random_sample, targets_from_labels
from stainseg.network import StainNet, choose_device, native_bf16
from stainseg.train.weights import class_weight_image, foreground_factor

__all__ = ["Schedule", "PRESETS", "resolve_schedule", "train", "TrainResult", "validation_score", "TrainData",
           "prepare_data", "sample_batch", "train_step", "make_optimizer", "LoopState", "Session", "save_checkpoint",
           "load_checkpoint", "TimeBudget", "record_validation", "weighted_softmax_loss"]

CHECKPOINT = "checkpoint.pt"


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
#: Whole images are held out for validation only when at least this many would be; with fewer training
#: fields a single held-out field (one cell type, one exposure) would decide early stopping and the kept
#: weights, so a strip of every field is validated on instead.
MIN_VALIDATION_FIELDS = 2


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


# ==================================================================== data preparation
@dataclasses.dataclass
class TrainData:
    """Training and validation arrays made from prepared images and instance labels (:func:`prepare_data`).

    ``regions[i]`` is the part of image ``i`` that training crops come from (None: all of it);
    ``strips`` maps an image to the column where its validation strip starts (few images only).

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> lab = np.zeros((64, 64), int); lab[20:40, 20:40] = 1
    >>> data = prepare_data([lab[None].astype(np.float32)] * 5, [lab] * 5, ExperimentConfig(), np.random.default_rng(0))
    >>> len(data.images), len(data.val_images), data.foreground_factor > 1
    (5, 5, True)
    """

    images: list[np.ndarray]
    targets: list[np.ndarray]
    weights: list[np.ndarray]
    train_idx: list[int]
    val_idx: list[int]
    regions: list[Optional[tuple[slice, slice]]]
    val_images: list[np.ndarray]
    val_targets: list[np.ndarray]
    strips: dict[int, int]
    foreground_fraction: float
    foreground_factor: float


def prepare_data(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: ExperimentConfig,
                 rng: np.random.Generator) -> TrainData:
    """Targets, pixel weights and the train / validation split of prepared images and their labels.

    When a ``validation_fraction`` of the images makes at least ``MIN_VALIDATION_FIELDS`` whole
    images, they are held out; otherwise every image is trained on and a strip on the right of each
    (that fraction wide, at least 32 px) is validated on instead. Validation images are centre-cropped to at most 256 x 256 and
    at most 8 are kept, so that validation stays cheap.

    Parameters
    ----------
    images : sequence of ndarray, shape (C, Y, X)
        Prepared network inputs.
    labels : sequence of ndarray, shape (Y, X), int
        Instance labels, one per image.
    cfg : ExperimentConfig
        Uses ``cfg.model.head`` and ``cfg.train`` (``validation_fraction``, ``separate_touching``,
        ``foreground_factor``).
    rng : numpy.random.Generator
        Draws the split (advanced only when whole images are held out).

    Returns
    -------
    TrainData

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> labels = [np.zeros((64, 64), int) for _ in range(14)]
    >>> for lab in labels:
    ...     lab[10:20, 10:20] = 1
    >>> images = [lab[None].astype(np.float32) for lab in labels]
    >>> data = prepare_data(images, labels, ExperimentConfig(), np.random.default_rng(0))
    >>> len(data.train_idx), len(data.val_idx), data.strips
    (12, 2, {})
    >>> len(prepare_data(images[:6], labels[:6], ExperimentConfig(), np.random.default_rng(0)).strips)
    6
    >>> prepare_data(images[:2], labels[:2], ExperimentConfig(), np.random.default_rng(0)).strips
    {0: 32, 1: 32}
    """
    tcfg = cfg.train
    images = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
    targets = [targets_from_labels(lab, cfg.model.head, separate_touching=tcfg.separate_touching) for lab in labels]
    train_idx, val_idx = _split(len(images), tcfg.validation_fraction, rng)
    regions: list[Optional[tuple[slice, slice]]] = [None] * len(images)
    val_images: list[np.ndarray] = [images[i] for i in val_idx]
    val_targets: list[np.ndarray] = [targets[i] for i in val_idx]
    strips: dict[int, int] = {}
    if tcfg.validation_fraction > 0 and len(val_idx) < MIN_VALIDATION_FIELDS:
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
    val_images, val_targets = _validation_crops(val_images, val_targets, VALIDATION_IMAGES, VALIDATION_SIZE)
    fg_fraction = float(np.mean([np.mean(targets[i] > 0) for i in train_idx]))
    factor = foreground_factor(tcfg.foreground_factor, fg_fraction)
    weights = [class_weight_image(t > 0, factor) for t in targets]
    return TrainData(images, targets, weights, train_idx, val_idx, regions, val_images, val_targets, strips,
                     fg_fraction, factor)


def sample_batch(data: TrainData, batch_size: int, crop_size: int, rng: np.random.Generator,
                 rotate: bool = False, intensity: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of random augmented crops: inputs (B, C, S, S), targets (B, S, S) and weights (B, S, S).

    ``rotate`` and ``intensity``: ``[train] augment_rotate`` and ``augment_intensity``
    (:func:`~stainseg.train.augment.random_sample`, :func:`~stainseg.train.augment.jitter_intensity`).

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.config import ExperimentConfig
    >>> lab = np.zeros((64, 64), int); lab[20:40, 20:40] = 1
    >>> data = prepare_data([lab[None].astype(np.float32)] * 4, [lab] * 4, ExperimentConfig(), np.random.default_rng(0))
    >>> [a.shape for a in sample_batch(data, 2, 32, np.random.default_rng(0))]
    [(2, 1, 32, 32), (2, 32, 32), (2, 32, 32)]
    """
    batch_x, batch_t, batch_w = [], [], []
    for _ in range(batch_size):
        i = data.train_idx[int(rng.integers(len(data.train_idx)))]
        x, (t, w) = random_sample(data.images[i], [data.targets[i], data.weights[i]], crop_size, rng, data.regions[i], rotate)
        x = jitter_intensity(x, rng, intensity)
        batch_x.append(x), batch_t.append(t), batch_w.append(w)
    return np.stack(batch_x), np.stack(batch_t), np.stack(batch_w)


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


# ==================================================================== loop state and checkpoint
@dataclasses.dataclass
class LoopState:
    """Where the loop stands; stored as a plain dict in the checkpoint (``checkpoint.pt["state"]``).

    Examples
    --------
    >>> LoopState(total=100).iteration
    0
    """

    iteration: int = 0
    total: int = 0
    best_score: float = -1.0
    best_state: Optional[dict[str, torch.Tensor]] = None
    stale: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0
    losses: list[float] = dataclasses.field(default_factory=list)
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (no copies), as saved in the checkpoint.

        Examples
        --------
        >>> LoopState(iteration=3).as_dict()["iteration"]
        3
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class Session:
    """Everything a checkpoint saves and restores: network, optimiser, gradient scaler, RNGs and loop state.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Linear(2, 2)
    >>> s = Session(net, torch.optim.AdamW(net.parameters()), torch.amp.GradScaler("cuda", enabled=False),
    ...             np.random.default_rng(0), LoopState(total=10))
    >>> s.state.total
    10
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    rng: np.random.Generator
    state: LoopState


def save_checkpoint(path: Path, session: Session, cfg: ExperimentConfig, sched: Schedule) -> None:
    """Write ``checkpoint.pt`` atomically: weights, optimiser, scaler, both RNG states, loop state, settings.

    Examples
    --------
    >>> import tempfile, torch, numpy as np
    >>> from pathlib import Path
    >>> from stainseg.config import ExperimentConfig
    >>> net = torch.nn.Linear(2, 2)
    >>> s = Session(net, torch.optim.AdamW(net.parameters()), torch.amp.GradScaler("cuda", enabled=False),
    ...             np.random.default_rng(0), LoopState(iteration=7, total=10))
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> save_checkpoint(path, s, ExperimentConfig(), PRESETS["fast"])
    >>> s.state = LoopState()
    >>> load_checkpoint(path, s, ExperimentConfig(), torch.device("cpu"))
    >>> s.state.iteration
    7
    """
    payload = {
        "model": session.model.state_dict(), "optimizer": session.optimizer.state_dict(),
        "scaler": session.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
        "numpy_rng": session.rng.bit_generator.state, "state": session.state.as_dict(),
        "config": _comparable(cfg), "schedule": dataclasses.asdict(sched),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, session: Session, cfg: ExperimentConfig, device: torch.device) -> None:
    """Restore ``session`` from a checkpoint of the same training and model settings (one-line error otherwise).

    Examples
    --------
    >>> import tempfile, torch, numpy as np
    >>> from pathlib import Path
    >>> from stainseg.config import ExperimentConfig
    >>> net = torch.nn.Linear(2, 2)
    >>> s = Session(net, torch.optim.AdamW(net.parameters()), torch.amp.GradScaler("cuda", enabled=False),
    ...             np.random.default_rng(0), LoopState(iteration=7, total=10))
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> save_checkpoint(path, s, ExperimentConfig(), PRESETS["fast"])
    >>> other = ExperimentConfig()
    >>> other.train.seed = 1
    >>> load_checkpoint(path, s, other, torch.device("cpu"))   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: ...checkpoint.pt: checkpoint was made with different training/model settings; ...
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # corrupt or truncated file
        raise StainsegError(f"cannot read the checkpoint ({type(exc).__name__}); delete it to start over", path) from None
    if ckpt.get("config") != _comparable(cfg):
        raise StainsegError("checkpoint was made with different training/model settings; use the same config or delete it to start over", path)
    session.model.load_state_dict(ckpt["model"])
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["torch_rng"])
    session.rng.bit_generator.state = ckpt["numpy_rng"]
    session.state = LoopState(**ckpt["state"])


# ==================================================================== time budget
class TimeBudget:
    """Compresses the schedule to ``max_minutes``: after a short timing, the total that still fits.

    The speed is timed from the 5th iteration of this session on (warm-up skipped, also after a
    resume), estimated 10 iterations later and re-estimated at every validation (validation time
    included: the CPU may be shared). 5 % of the budget is kept for the last validation and saving.

    Examples
    --------
    >>> budget = TimeBudget(max_minutes=1.0, planned=1000, eval_every=50, start=0)
    >>> budget.update(5, 1000, elapsed_s=0.5, now=0.5) is None     # timing starts here
    True
    >>> budget.update(15, 1000, elapsed_s=1.5, now=1.5)           # 0.1 s per iteration, 55.5 s left
    570
    """

    def __init__(self, max_minutes: Optional[float], planned: int, eval_every: int, start: int) -> None:
        self.max_minutes, self.planned, self.eval_every, self.start = max_minutes, planned, eval_every, start
        self.timed_from: Optional[tuple[int, float]] = None

    def update(self, it: int, total: int, elapsed_s: float, now: Optional[float] = None) -> Optional[int]:
        """The new total after iteration ``it`` (1-based count done), or None when it is not re-estimated now.

        Examples
        --------
        >>> budget = TimeBudget(max_minutes=None, planned=100, eval_every=10, start=0)
        >>> budget.update(50, 100, elapsed_s=3.0) is None                  # no budget: the total never changes
        True
        """
        if self.max_minutes is None:
            return None
        now = time.perf_counter() if now is None else now
        if self.timed_from is None:
            if it >= self.start + 5 or it == total:  # skip warm-up iterations (also after resume)
                self.timed_from = (it, now)
            return None
        if it == self.timed_from[0] + 10 or it % self.eval_every == 0:
            per_it = (now - self.timed_from[1]) / (it - self.timed_from[0])
            budget = self.max_minutes * 60.0 * 0.95 - elapsed_s
            return max(it, min(self.planned, it + int(budget / per_it)))
        return None


# ==================================================================== validation
#: Validation scores averaged for keeping the best weights and for early stopping.
VALIDATION_WINDOW = 3


def record_validation(state: LoopState, model: torch.nn.Module, score: float, learning_rate: float,
                      patience: Optional[int], validated: bool, keep_best: bool = True) -> dict[str, Any]:
    """Append a history row for the iteration just done, keep the best weights, decide on early stopping.

    Both compare the mean of the last :data:`VALIDATION_WINDOW` validation scores (``best_score`` is
    such a mean), not single scores. Early stopping only happens in the second half of the schedule
    (the cosine decay does most of its work late), after ``patience`` validations without improvement.

    Examples
    --------
    >>> import torch
    >>> state, net = LoopState(iteration=60, total=100, losses=[0.5, 0.3]), torch.nn.Linear(1, 1)
    >>> record_validation(state, net, 0.8, 1e-3, patience=1, validated=True)["loss"]
    0.4
    >>> state.iteration, state.losses = 70, [0.2]
    >>> _ = record_validation(state, net, 0.7, 1e-3, patience=1, validated=True)
    >>> state.best_score, state.stale, state.stopped_early
    (0.8, 1, True)
    """
    it = state.iteration
    row = {"iteration": it, "loss": float(np.mean(state.losses)), "learning_rate": learning_rate,
           "val_score": score, "elapsed_s": round(state.elapsed_s, 2)}
    state.history.append(row)
    state.losses = []
    if validated:
        # the mean of the last VALIDATION_WINDOW scores: one validation swings by 0.1-0.2 on few real fields
        # (deepcell phase: 0.57-0.79 fifty iterations apart), and a single lucky score would otherwise stop
        # the run before the cosine decay's low learning rates and keep that lucky checkpoint
        recent = [r["val_score"] for r in state.history if np.isfinite(r["val_score"])][-VALIDATION_WINDOW:]
        score = float(np.mean(recent)) if recent else score
        if score > state.best_score:
            state.best_score, state.stale = score, 0
            if keep_best:
                state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.stale += 1
        if patience is not None and state.stale >= patience and it >= state.total // 2:
            state.stopped_early = True
    return row


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
    in_channels = _check_inputs(images, labels)
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
