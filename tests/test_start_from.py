"""Training from an existing model's weights (``[train] start_from``), on the bundled real isl crop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stainseg
from stainseg.config import ExperimentConfig, ModelConfig
from stainseg.data import isl_sample
from stainseg.errors import StainsegError
from stainseg.network import StainNet
from stainseg.train.loop import start_from
from stainseg.train.start import START_LAYER, adapt_state, start_weights

OPTIONS = dict(crop_size=64, batch_size=2, progress=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def isl_crop():
    """The bundled real crop: five phase planes (C, Y, X) and its automatic DAPI nuclei, 192 px high."""
    sample = isl_sample()
    labels = stainseg.automatic_labels(nuclei=sample["dapi"]).astype(np.int32)
    return np.asarray(sample["phase"], np.float32)[:, :192], labels[:192]


@pytest.fixture(scope="module")
def start_model(isl_crop, tmp_path_factory):
    """A one-plane phase -> nuclei model trained briefly on the middle plane."""
    planes, labels = isl_crop
    folder = tmp_path_factory.mktemp("start") / "model"
    stainseg.train([planes[2]], [labels], out=folder, iterations=20, **OPTIONS)
    return folder


def test_adapt_state_spreads_the_first_layer_over_new_planes():
    net = StainNet(ModelConfig(in_channels=1))
    state = adapt_state(net.state_dict(), 5)
    assert state[START_LAYER].shape[1] == 5
    torch.testing.assert_close(state[START_LAYER].sum(dim=1), net.state_dict()[START_LAYER][:, 0])
    five = StainNet(ModelConfig(in_channels=5))
    five.load_state_dict(state)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():  # five equal planes give the one-plane network's answer
        torch.testing.assert_close(five.eval()(x.repeat(1, 5, 1, 1)), net.eval()(x), atol=1e-5, rtol=1e-4)


def test_start_weights_take_the_start_models_architecture(start_model):
    state, arch = start_weights(start_model, ModelConfig(in_channels=5, base_width=16))
    assert arch.in_channels == 5 and arch.base_width == 8  # the start model's width wins
    assert state[START_LAYER].shape[1] == 5


def test_the_loop_loads_the_start_weights(start_model):
    cfg = ExperimentConfig()
    cfg.model.in_channels = 1
    cfg.train.start_from = str(start_model)
    net = StainNet(cfg.model)
    start_from(net, cfg)
    reference = stainseg.Model.load(start_model, device="cpu", engine="torch").network.state_dict()
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(tensor, reference[name])


def test_fine_tuning_five_planes_from_a_one_plane_model(isl_crop, start_model, tmp_path):
    planes, labels = isl_crop
    folder = tmp_path / "tuned"
    tuned = stainseg.train([planes], [labels], out=folder, iterations=2, start_from=str(start_model), **OPTIONS)
    assert tuned.in_channels == 5
    assert json.loads((folder / "model.json").read_text())["training"]["start_from"] == str(start_model)
    # after 2 iterations the network still answers like its start: the same foreground, plane for plane
    start = stainseg.Model.load(start_model, device="cpu")
    fg_start = start.predict_probability(planes[2])[1] > 0.5
    fg_tuned = tuned.predict_probability(np.repeat(planes[2:3], 5, axis=0))[1] > 0.5
    assert fg_start.any()
    overlap = np.count_nonzero(fg_start & fg_tuned) / np.count_nonzero(fg_start | fg_tuned)
    assert overlap > 0.5


def test_start_from_a_folder_that_is_no_model(isl_crop, tmp_path):
    planes, labels = isl_crop
    with pytest.raises(StainsegError, match="start_from must be a stainseg model folder"):
        stainseg.train([planes[2]], [labels], out=tmp_path / "m", iterations=2, start_from=str(tmp_path), **OPTIONS)


def test_start_from_a_corrupt_model(start_model, isl_crop, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text((start_model / "model.json").read_text())
    (broken / "model.pt").write_bytes(b"not a torch file")
    planes, labels = isl_crop
    with pytest.raises(StainsegError, match="broken"):
        stainseg.train([planes[2]], [labels], out=tmp_path / "m", iterations=2, start_from=str(broken), **OPTIONS)
