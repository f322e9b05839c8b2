"""What a training run carries between iterations: the loop state, the checkpoint, the time budget
and the validation record (best weights, early stopping).

A checkpoint holds the weights, optimiser, scaler, both RNG states and the loop state, so that on
CPU a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from stainseg.config import ExperimentConfig, config_to_dict
from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path
from stainseg.train.schedule import Schedule

__all__ = ["CHECKPOINT", "LoopState", "Session", "save_checkpoint", "load_checkpoint", "TimeBudget",
           "record_validation", "VALIDATION_WINDOW"]

CHECKPOINT = "checkpoint.pt"


def _comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    data = config_to_dict(cfg)
    train = {k: v for k, v in data["train"].items() if k not in ("max_minutes", "checkpoint_every", "device")}
    return {"train": train, "model": data["model"]}


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
    >>> from stainseg.train.schedule import PRESETS
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
    >>> from stainseg.train.schedule import PRESETS
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


