"""docs/tutorial.md runs: its python code blocks, in order, in one namespace (with a short training)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"
TRAINING = "iterations=500"


def code_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_tutorial_code_blocks_run_in_order(tmp_path, monkeypatch):
    from conftest import SHARED_DATA

    text = TUTORIAL.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    assert len(blocks) == 6 and sum(block.count(TRAINING) for block in blocks) == 2
    monkeypatch.chdir(tmp_path)  # the tutorial writes MODEL/ into the current folder
    monkeypatch.setenv("STAINSEG_SHARED_DATA", str(SHARED_DATA))
    namespace: dict = {"__name__": "tutorial"}
    for i, block in enumerate(blocks):
        code = block.replace(TRAINING, "iterations=20, crop_size=64")  # keep the test short; the page shows a real run
        exec(compile(code, f"{TUTORIAL}:block{i + 1}", "exec"), namespace)
    expected = "DeepCell HeLa_s6" if (SHARED_DATA / "deepcell" / "images" / "HeLa_s6_phase.tif").is_file() else "bundled isl crop"
    assert namespace["source"] == expected
    assert (tmp_path / "MODEL" / "model.json").is_file()
    scores = namespace["scores"]
    assert scores["n_truth"] >= 3 and 0.0 <= scores["percent_f_above"] <= 100.0
    # what the tutorial says Model.segment gives: the labels `stainseg segment` writes for the same plane
    loaded = namespace["stainseg"].Model.load(tmp_path / "MODEL")
    assert (loaded.segment(namespace["held_out"]) == namespace["cells"]).all()
    # section 6: cells grown from the network's nuclei, as `stainseg segment` makes them from the folder
    cells_model = namespace["stainseg"].Model.load(tmp_path / "CELLS")
    assert cells_model.objects == "cells" and cells_model.network_objects == "nuclei"
    again = cells_model.run(namespace["held_out"])
    assert (again["labels"] == namespace["whole_cells"]).all() and (again["nuclei"] == namespace["their_nuclei"]).all()
    assert 0.0 <= namespace["cell_scores"]["percent_f_above"] <= 100.0


@pytest.mark.parametrize("text, expected", [("a\n```python\nx = 1\n```\nb\n```text\nno\n```\n```python\ny = 2\n```\n", ["x = 1\n", "y = 2\n"])])
def test_code_blocks_are_the_python_ones_in_order(text, expected):
    assert code_blocks(text) == expected
