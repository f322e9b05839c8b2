"""Config: TOML round trip and every kind of validation error (one line, names key and file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stainseg.config import ExperimentConfig, config_from_dict, load_config, save_config
from stainseg.errors import StainsegError

GOOD = """
name = "t"
root = "images"
pattern = '(?P<well>[A-P]\\d{2})_s(?P<site>\\d+)_t(?P<time>\\d+)(?:_z(?P<z>\\d))?_(?P<channel>\\w+)\\.tif'
objects = "cells"
[channels]
input = ["BF"]
nuclei = "Hoechst"
cytoplasm = "CellTracker"
[endpoint]
time = "last"
[split]
test_sites = ["9"]
[train]
iterations = 50
foreground_factor = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_load_good(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.objects == "cells"
    assert cfg.channels.input == ["BF"]
    assert cfg.split.test_sites == ["9"]
    assert cfg.train.foreground_factor == 3.0 and isinstance(cfg.train.foreground_factor, float)
    assert cfg.root_path == tmp_path / "images"
    assert cfg.dilation() == 9


def test_round_trip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    save_config(cfg, tmp_path / "saved.toml")
    again = load_config(tmp_path / "saved.toml")
    again.source = cfg.source = None
    assert again.root_path == (tmp_path / "images").resolve()
    again.root = cfg.root = ""
    assert again == cfg


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: "bogus = 1\n" + t, "unknown key 'bogus'"),
        (lambda t: t.replace("[train]", "[train]\nitertions = 3"), "unknown key 'train.itertions'"),
        (lambda t: t.replace('objects = "cells"', 'objects = "blobs"'), "key 'objects' must be"),
        (lambda t: t.replace("iterations = 50", 'iterations = "many"'), "key 'train.iterations' must be an integer"),
        (lambda t: t.replace('root = "images"\n', ""), "missing required key 'root'"),
        (lambda t: t.replace("iterations = 50", "iterations = 0"), "key 'train.iterations' must be >= 1"),
        (lambda t: t.replace("(?P<channel>\\w+)", "(?P<chan>\\w+)"), "needs a named group (?P<channel>"),
        (lambda t: t.replace("[A-P]", "[P-A]"), "not a valid regular expression"),
        (lambda t: t.replace('input = ["BF"]', "input = []"), "at least one"),
        (lambda t: t + "\n[segment]\ntile_size = 100\n", "key 'segment.tile_size' must be a multiple of 8"),
        (lambda t: t + "\n[segment]\ndilation = 4\n", "odd number"),
        (lambda t: t + "\n[segment]\nmin_depth = -1\n", "key 'segment.min_depth' must be >= 0"),
        (lambda t: t.replace("[split]", "[split\n"), "TOML syntax error"),
    ],
)
def test_validation_errors(tmp_path: Path, edit, expected: str) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(StainsegError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    assert str(path.resolve()) in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StainsegError, match="experiment file not found"):
        load_config(tmp_path / "nope.toml")


def test_defaults_are_the_papers() -> None:
    cfg = config_from_dict({"root": "x", "pattern": "(?P<channel>a)", "channels": {"input": ["a"], "nuclei": "a"}})
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.segment.tile_size == 240 and cfg.segment.two_pass  # METHOD 5.2
    assert cfg.groundtruth.cytoplasm_dilation == 5  # METHOD 1.4
    assert cfg.model.base_width == 8  # METHOD 3.1
    assert cfg.dilation() == 3  # nuclei: METHOD 5.4


def test_segment_min_depth_is_read_and_saved(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD + "\n[segment]\nmin_depth = 1\n"))
    assert cfg.segment.min_depth == 1.0 and isinstance(cfg.segment.min_depth, float)
    assert cfg.segment.instance_options() == {"threshold": 0.5, "min_size": None, "min_distance": None, "min_depth": 1.0}
    assert load_config(write(tmp_path, GOOD)).segment.min_depth is None  # the library default (0.5 px) applies
