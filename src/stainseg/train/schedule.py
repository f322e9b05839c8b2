"""Training schedules: the paper's preset, our fast CPU preset, and the learning rate at each iteration."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

from stainseg.config import ExperimentConfig


@dataclass
class Schedule:
    """Resolved training settings (preset + overrides).

    Examples
    --------
    >>> PRESETS["fast"].optimizer, PRESETS["paper"].crop_size
    ('adamw', 480)
    """

    iterations: int
    crop_size: int
    batch_size: int
    learning_rate: float
    optimizer: str  # "rmsprop" or "adamw"
    decay: str  # "step" (÷10 every step_every) or "cosine" (warm-up then cosine)
    step_every: int = 5000
    warmup_fraction: float = 0.05
    eval_every: int = 100
    patience: Optional[int] = None  # validations without improvement before stopping; None = never
    weight_decay: float = 0.0
    keep_best: bool = True  # end with the best-validated weights (else the last ones)


PRESETS: dict[str, Schedule] = {
    "paper": Schedule(iterations=60_000, crop_size=480, batch_size=4, learning_rate=1e-3, optimizer="rmsprop",
                      decay="step", step_every=5000, eval_every=1000, patience=None),
    # fast: no early stopping, the last weights kept. A cosine schedule ends at its lowest learning rate, and on
    # few real fields single validations are noisy: on deepcell phase -> nuclei (six fields, 2,000 iterations)
    # stopping early on them gave F1 0.514 against the held-out HeLa fields' labels, training to the end 0.684
    "fast": Schedule(iterations=1000, crop_size=128, batch_size=4, learning_rate=3e-3, optimizer="adamw",
                     decay="cosine", warmup_fraction=0.05, eval_every=50, patience=None, weight_decay=1e-4,
                     keep_best=False),
}


def resolve_schedule(cfg: ExperimentConfig) -> Schedule:
    """The preset of ``cfg.train.preset`` with the config's explicit overrides applied.

    Examples
    --------
    >>> from stainseg.config import ExperimentConfig
    >>> cfg = ExperimentConfig()
    >>> cfg.train.iterations = 200
    >>> s = resolve_schedule(cfg)
    >>> s.iterations, s.crop_size, s.eval_every      # fast preset, validation every tenth of the run
    (200, 128, 20)
    """
    sched = copy.deepcopy(PRESETS[cfg.train.preset])
    for key in ("iterations", "crop_size", "batch_size", "learning_rate"):
        value = getattr(cfg.train, key)
        if value is not None:
            setattr(sched, key, value)
    sched.eval_every = max(1, min(sched.eval_every, sched.iterations // 10))
    return sched


def learning_rate_at(iteration: int, total: int, sched: Schedule) -> float:
    """Learning rate for (0-based) ``iteration`` of ``total``.

    Examples
    --------
    >>> paper = PRESETS["paper"]
    >>> learning_rate_at(4999, 60_000, paper), learning_rate_at(5000, 60_000, paper)
    (0.001, 0.0001)
    >>> fast = PRESETS["fast"]
    >>> learning_rate_at(0, 1000, fast) < learning_rate_at(50, 1000, fast) > learning_rate_at(999, 1000, fast)   # warm-up, then decay
    True
    """
    if sched.decay == "step":
        # the paper: ÷10 every 5000 of 60 000; stretched proportionally when the run is shorter
        step_every = max(1, round(sched.step_every * total / PRESETS["paper"].iterations)) if total < sched.iterations else sched.step_every
        return sched.learning_rate * 0.1 ** (iteration // step_every)
    warmup = max(1, int(sched.warmup_fraction * total))
    if iteration < warmup:
        return sched.learning_rate * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, total - warmup)
    return sched.learning_rate * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
