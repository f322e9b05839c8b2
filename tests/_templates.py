"""Experiment files shared by tests: one cells experiment (phase input, DAPI nuclei) with keys to vary."""

from __future__ import annotations

from pathlib import Path

CELLS_EXPERIMENT = """root = "images"
pattern = '(?P<site>s\\d)_(?P<channel>phase|dapi)\\.tif'
objects = "cells"
{extra}
[channels]
input = ["phase"]
nuclei = "dapi"
{cytoplasm}
{train}"""
"""Whole cells from phase images (``images/s1_phase.tif``, ``images/s1_dapi.tif``, ...) with a nuclear stain."""


def write_cells_experiment(folder: Path, extra: str = "", cytoplasm: str = "", train: str = "") -> Path:
    """Write ``folder/exp.toml`` from :data:`CELLS_EXPERIMENT` and return its path.

    Parameters
    ----------
    folder : Path
        Where the file goes (its images are looked for in ``folder/images``).
    extra : str
        Top-level lines, e.g. ``'cell_method = "nuclei"'``.
    cytoplasm : str
        A ``[channels]`` line, e.g. ``'cytoplasm = "ct"'``.
    train : str
        The ``[train]`` table's lines (no table when empty), e.g. ``"iterations = 1"``.
    """
    path = folder / "exp.toml"
    table = f"[train]\n{train}\n" if train else ""
    path.write_text(CELLS_EXPERIMENT.format(extra=extra, cytoplasm=cytoplasm, train=table))
    return path
