"""Training loop and model folder: loss goes down, the folder loads and predicts, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.draw import ellipse

from stainseg.config import ExperimentConfig, ChannelsConfig, ModelConfig, TrainConfig
from stainseg.errors import StainsegError
from stainseg.model import Model
from stainseg.train.fit import fit_model
from stainseg.train.loop import learning_rate_at, resolve_schedule, train


def synthetic_nuclei(shape=(128, 128), n=14, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Raw (1, Y, X) blob-like nuclei (textured, uneven brightness, some touching) on an uneven textured background."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    for k in range(1, n + 1):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        ry, rx = rng.uniform(5, 10), rng.uniform(5, 10)
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape, rotation=rng.uniform(0, np.pi))
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = k
        signal[rr[free], cc[free]] = rng.uniform(0.5, 1.0)
    texture = ndi.gaussian_filter(rng.normal(size=shape), 2).astype(np.float32)
    signal = ndi.gaussian_filter(signal, 1.0) * (1 + 0.5 * texture)
    yy, xx = np.mgrid[: shape[0], : shape[1]] / max(shape)
    background = 0.2 + 0.15 * xx + 0.1 * ndi.gaussian_filter(rng.normal(size=shape), 8) * 10
    image = background + signal + rng.normal(0, 0.04, shape)
    return (1000 * image[None]).astype(np.float32), labels


def _cfg(**train_kw) -> ExperimentConfig:
    base = dict(iterations=60, crop_size=64, batch_size=4, learning_rate=3e-3, checkpoint_every=20, seed=1,
                device="cpu", validation_fraction=0.25)
    base.update(train_kw)
    return ExperimentConfig(name="t", root="", pattern="", channels=ChannelsConfig(input=["DNA"], nuclei="DNA"),
                            train=TrainConfig(**base), model=ModelConfig(head="3class"))


def _data(n=4):
    pairs = [synthetic_nuclei(seed=s) for s in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_schedule_presets_and_overrides():
    cfg = _cfg(iterations=None, crop_size=None, batch_size=None, learning_rate=None)
    cfg.train.preset = "paper"
    paper = resolve_schedule(cfg)
    assert (paper.iterations, paper.crop_size, paper.learning_rate, paper.optimizer) == (60_000, 480, 1e-3, "rmsprop")
    assert learning_rate_at(4999, 60_000, paper) == pytest.approx(1e-3)
    assert learning_rate_at(5000, 60_000, paper) == pytest.approx(1e-4)
    fast = resolve_schedule(_cfg(iterations=None, crop_size=None))
    assert fast.crop_size == 128 and fast.optimizer == "adamw" and fast.eval_every == 50
    lrs = [learning_rate_at(i, 1000, fast) for i in range(1000)]
    assert max(lrs) == pytest.approx(3e-3) and lrs[-1] < 0.05 * max(lrs)


@pytest.mark.slow
def test_training_lowers_loss_and_writes_loadable_model(tmp_path):
    images, labels = _data()
    cfg = _cfg()
    cfg.model.head = "2class"  # learns these blobs in 60 iterations (foreground Dice ~0.93; 3class needs more)
    model = fit_model(images, labels, cfg, tmp_path / "model", progress=False)
    history = model.history
    assert [row["iteration"] for row in history] == [6 * (i + 1) for i in range(len(history))]  # validation every iterations // 10
    assert len(history) >= 5  # early stopping acts only in the second half
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    for name in ("model.pt", "model.json", "history.csv", "history.png", "summary.txt"):
        assert (tmp_path / "model" / name).is_file(), name
    assert not (tmp_path / "model" / "config.toml").exists()
    loaded = Model.load(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert not loaded.network.training and meta["in_channels"] == 1 and meta["network"]["head"] == "2class"
    assert meta["input_channels"] == ["DNA"] and meta["segment"]["dilation"] == loaded.dilation
    assert meta["preprocessing"]["normalization"] == "hybrid" and meta["preprocessing"]["statistics"][0]["images"] == 4
    assert meta["derived"]["objects"]["objects"] > 0 and meta["training"]["calibration"]["images"] >= 1
    test_image, test_labels = synthetic_nuclei(seed=99)
    foreground = loaded.predict_probability(test_image)[0] < 0.5
    dice = 2 * np.logical_and(foreground, test_labels > 0).sum() / (foreground.sum() + (test_labels > 0).sum())
    assert dice > 0.6, dice


def test_model_refuses_other_channel_counts(tmp_path):
    images, labels = _data(2)
    three = [np.concatenate([im, im, im]) for im in images]
    fit_model(three, labels, _cfg(iterations=2, validation_fraction=0.0, crop_size=32), tmp_path / "m3", progress=False, calibrate=False)
    model = Model.load(tmp_path / "m3")
    assert model.in_channels == 3
    with pytest.raises(StainsegError, match="1 channel.*expects 3"):
        model.segment(images[0][0])


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(StainsegError, match="not found"):
        Model.load(tmp_path / "nothing")
    images, labels = _data(1)
    fit_model(images, labels, _cfg(iterations=2, crop_size=32), tmp_path / "m", progress=False, calibrate=False)
    (tmp_path / "m" / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(StainsegError, match="model.pt.*corrupt"):
        Model.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").unlink()
    with pytest.raises(StainsegError, match="model.json.*missing"):
        Model.load(tmp_path / "m")


@pytest.mark.parametrize("preset,validation", [("paper", 0.34), ("fast", 0.0)])
def test_resume_after_kill_gives_identical_weights(tmp_path, preset, validation):
    images, labels = _data(3)
    # paper: RMSProp + step decay, with validation and best-weights tracking (no early stopping);
    # fast: AdamW + cosine, without validation (so that early stopping cannot end the run first)
    cfg = _cfg(iterations=10, checkpoint_every=4, crop_size=32, batch_size=2, validation_fraction=validation)
    cfg.train.preset = preset
    full = fit_model(images, labels, cfg, tmp_path / "full", progress=False, calibrate=False).history
    # a run killed after 6 iterations: the last checkpoint is at iteration 4
    assert fit_model(images, labels, cfg, tmp_path / "killed", progress=False, stop_after=6, calibrate=False) is None
    assert not (tmp_path / "killed" / "model.pt").exists()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["state"]["iteration"] == 4
    resumed = fit_model(images, labels, cfg, tmp_path / "killed", resume=True, progress=False, calibrate=False).history
    a = torch.load(tmp_path / "full" / "model.pt")
    b = torch.load(tmp_path / "killed" / "model.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in full] == [r["loss"] for r in resumed]
    info = json.loads((tmp_path / "killed" / "model.json").read_text())["training"]
    assert info["iterations_run"] == 10


def test_bad_inputs_are_one_line_errors(tmp_path):
    images, labels = _data(1)
    with pytest.raises(StainsegError, match="labels"):
        train(images, [labels[0][:10]], _cfg(), tmp_path, progress=False)
    with pytest.raises(StainsegError, match="no training images"):
        train([], [], _cfg(), tmp_path, progress=False)
    with pytest.raises(StainsegError, match="no training images"):
        fit_model([], [], _cfg(), tmp_path, progress=False)
