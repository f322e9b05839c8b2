"""The parts of the training loop, one at a time: data preparation, batches, one step, checkpoint, time budget, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stainseg.config import ExperimentConfig, ModelConfig
from stainseg.errors import StainsegError
from stainseg.network import StainNet
from stainseg.train.loop import (PRESETS, LoopState, Session, TimeBudget, load_checkpoint, make_optimizer, prepare_data,
                                 record_validation, sample_batch, save_checkpoint, train_step)
from test_train_loop import synthetic_nuclei


def _fields(n, shape=(128, 128)):
    pairs = [synthetic_nuclei(shape=shape, seed=s) for s in range(n)]
    return [p[0] / 1000.0 for p in pairs], [p[1] for p in pairs]


def test_many_images_hold_out_whole_images_and_weight_the_foreground():
    images, labels = _fields(7, shape=(300, 300))
    cfg = ExperimentConfig()
    cfg.train.validation_fraction = 0.3
    data = prepare_data(images, labels, cfg, np.random.default_rng(0))
    assert len(data.val_idx) == 2 and sorted(data.train_idx + data.val_idx) == list(range(7))
    assert not data.strips and all(r is None for r in data.regions)
    assert all(v.shape == (1, 256, 256) for v in data.val_images)  # centre crops keep validation cheap
    fg = labels[0] > 0
    assert data.weights[0][fg].mean() > data.weights[0][~fg].mean()
    assert data.foreground_fraction == pytest.approx(np.mean([np.mean(data.targets[i] > 0) for i in data.train_idx]))


def test_few_images_validate_on_a_strip_that_training_never_sees():
    images, labels = _fields(2)
    for image in images:  # the value of each pixel is its column: crops tell which columns they came from
        image[:] = np.arange(image.shape[-1], dtype=np.float32)
    data = prepare_data(images, labels, ExperimentConfig(), np.random.default_rng(0))
    assert data.strips == {0: 96, 1: 96} and data.train_idx == [0, 1]
    assert data.val_images[0].shape == (1, 128, 32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, t, w = sample_batch(data, 4, 64, rng)
        assert x.shape == (4, 1, 64, 64) and t.shape == w.shape == (4, 64, 64)
        assert x.max() < 96  # never a pixel of the validation strip


def test_train_step_lowers_the_loss_on_one_batch():
    torch.manual_seed(0)
    images, labels = _fields(4)
    data = prepare_data(images, labels, ExperimentConfig(), np.random.default_rng(0))
    batch = sample_batch(data, 2, 32, np.random.default_rng(0))
    net = StainNet(ModelConfig(head="3class"))
    opt, scaler = make_optimizer(net, PRESETS["fast"]), torch.amp.GradScaler("cuda", enabled=False)
    losses = [train_step(net, opt, scaler, batch, torch.device("cpu")) for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0]


def _session(seed=0):
    torch.manual_seed(seed)
    net = StainNet(ModelConfig())
    return Session(net, make_optimizer(net, PRESETS["fast"]), torch.amp.GradScaler("cuda", enabled=False),
                   np.random.default_rng(seed), LoopState(iteration=12, total=40, history=[{"iteration": 10}]))


def test_checkpoint_restores_weights_optimiser_rngs_and_state(tmp_path):
    cfg, path = ExperimentConfig(), tmp_path / "checkpoint.pt"
    saved = _session(0)
    saved.rng.random(3)
    save_checkpoint(path, saved, cfg, PRESETS["fast"])
    expected_numpy, expected_torch = saved.rng.random(), torch.rand(1)
    torch.manual_seed(99)
    restored = _session(1)
    load_checkpoint(path, restored, cfg, torch.device("cpu"))
    assert restored.state.iteration == 12 and restored.state.history == [{"iteration": 10}]
    for k, v in saved.model.state_dict().items():
        assert torch.equal(v, restored.model.state_dict()[k])
    assert restored.rng.random() == expected_numpy and torch.equal(torch.rand(1), expected_torch)


def test_checkpoint_of_other_settings_or_garbage_is_a_one_line_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _session(), ExperimentConfig(), PRESETS["fast"])
    other = ExperimentConfig()
    other.train.seed = 5
    with pytest.raises(StainsegError, match="different training/model settings"):
        load_checkpoint(path, _session(), other, torch.device("cpu"))
    other.train.seed, other.train.max_minutes = 0, 3.0  # a time budget alone does not change the run
    load_checkpoint(path, _session(), other, torch.device("cpu"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(StainsegError, match="cannot read the checkpoint") as info:
        load_checkpoint(path, _session(), ExperimentConfig(), torch.device("cpu"))
    assert "\n" not in str(info.value)


def test_time_budget_fits_the_total_to_the_minutes_left():
    assert TimeBudget(None, 1000, 50, 0).update(20, 1000, 1.0, now=1.0) is None  # no budget: never changes
    budget = TimeBudget(max_minutes=1.0, planned=1000, eval_every=50, start=100)  # a resumed run
    assert budget.update(104, 1000, 10.0, now=10.0) is None  # warm-up after resume is not timed
    assert budget.update(105, 1000, 10.0, now=10.0) is None  # timing starts
    assert budget.update(115, 1000, 12.0, now=12.0) == 115 + int((57.0 - 12.0) / 0.2)
    assert budget.update(120, 1000, 13.0, now=13.0) is None  # only at validations from now on
    assert budget.update(150, 1000, 56.0, now=56.0) == 150  # the budget is spent: stop here
    fast = TimeBudget(max_minutes=60.0, planned=300, eval_every=50, start=0)
    fast.update(5, 300, 0.1, now=0.1)
    assert fast.update(15, 300, 0.2, now=0.2) == 300  # never beyond the planned schedule


def test_validation_keeps_the_best_weights_and_stops_late_only():
    net = torch.nn.Linear(2, 2)
    state = LoopState(iteration=10, total=100, losses=[1.0])
    record_validation(state, net, 0.5, 1e-3, patience=1, validated=True)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    state.iteration, state.losses = 20, [0.5]
    record_validation(state, net, 0.4, 1e-3, patience=1, validated=True)
    assert state.stale == 1 and not state.stopped_early  # first half of the schedule: keep going
    assert torch.equal(state.best_state["weight"], best["weight"])
    state.iteration, state.losses = 60, [0.5]
    row = record_validation(state, net, 0.3, 1e-3, patience=1, validated=True)
    assert state.stopped_early and row == {"iteration": 60, "loss": 0.5, "learning_rate": 1e-3, "val_score": 0.3, "elapsed_s": 0.0}
    unvalidated = LoopState(iteration=60, total=100, losses=[0.5])
    record_validation(unvalidated, net, float("nan"), 1e-3, patience=1, validated=False)
    assert unvalidated.best_state is None and not unvalidated.stopped_early and len(unvalidated.history) == 1


def test_validation_judges_the_mean_of_the_last_three_scores_and_can_keep_the_last_weights():
    net = torch.nn.Linear(2, 2)
    state = LoopState(iteration=0, total=1000, losses=[1.0])
    for it, score in zip((50, 100, 150, 200), (0.6, 0.6, 0.6, 0.9)):  # one lucky validation
        state.iteration, state.losses = it, [0.5]
        record_validation(state, net, score, 1e-3, patience=None, validated=True)
    assert state.best_score == pytest.approx(0.7)  # (0.6 + 0.6 + 0.9) / 3, not 0.9
    state.iteration, state.losses = 250, [0.5]
    record_validation(state, net, 0.3, 1e-3, patience=None, validated=True)
    assert state.stale == 1 and state.best_score == pytest.approx(0.7)
    last_only = LoopState(iteration=50, total=100, losses=[0.5])
    record_validation(last_only, net, 0.8, 1e-3, patience=None, validated=True, keep_best=False)
    assert last_only.best_state is None and last_only.best_score == pytest.approx(0.8)
