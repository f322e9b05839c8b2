"""The bundled real sample (a crop of the isl phase-contrast z-stack): files, licence, attribution, and the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stainseg.data import ISL_PLANES, isl_folder, isl_sample

REPO = Path(__file__).resolve().parents[1]


def test_sample_loads_as_real_phase_and_dapi() -> None:
    sample = isl_sample()
    phase, dapi = sample["phase"], sample["dapi"]
    assert phase.shape == (len(ISL_PLANES), 384, 512) and phase.dtype == np.uint16
    assert dapi.shape == (384, 512) and dapi.dtype == np.uint16
    # phase contrast centred near 32768 by its source; DAPI: dark background with bright nuclei
    assert 30000 < np.median(phase) < 35000
    assert np.percentile(dapi, 99.5) > 2 * np.median(dapi)
    # the planes differ (a real z-stack, not copies)
    assert not np.array_equal(phase[0], phase[-1])
    assert isl_sample([6])["phase"].shape == (1, 384, 512)


def test_unknown_plane_is_a_one_line_error() -> None:
    from stainseg.errors import StainsegError

    with pytest.raises(StainsegError, match="not bundled"):
        isl_sample([3])


def test_licence_and_attribution_travel_with_the_data() -> None:
    folder = isl_folder()
    licence = (folder / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence and "4. Redistribution" in licence
    notice = (folder / "NOTICE").read_text()
    assert "Christiansen" in notice and "in-silico-labeling" in notice and "Changes made" in notice
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 3_000_000, f"bundled sample is {size / 1e6:.1f} MB; keep it small"
    # only isl data is bundled (never deepcell or sephace)
    assert {p.name for p in folder.parent.iterdir() if p.is_dir() and not p.name.startswith("__")} == {"isl"}


def test_crop_is_the_source_unchanged(shared_data: Path) -> None:
    """The bundled pixels are the source's pixels at the documented crop."""
    import tifffile

    from stainseg.data.make_isl_crop import COLUMNS, ROWS

    source = shared_data / "isl" / "images"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    sample = isl_sample()
    for z, plane in zip(ISL_PLANES, sample["phase"]):
        assert np.array_equal(plane, tifffile.imread(source / f"isl_s1_phase_z{z:02d}.tif")[ROWS, COLUMNS])
    assert np.array_equal(sample["dapi"], tifffile.imread(source / "isl_s1_dapi.tif")[ROWS, COLUMNS])


@pytest.mark.slow
def test_wheel_contains_the_data_and_licence(tmp_path: Path) -> None:
    """Built as a user installs it: the wheel holds the images, LICENSE and NOTICE."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(tree)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("stainseg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"stainseg/data/isl/isl_s1_phase_z{z:02d}.tif" for z in ISL_PLANES} | {
        "stainseg/data/isl/isl_s1_dapi.tif", "stainseg/data/isl/LICENSE", "stainseg/data/isl/NOTICE", "stainseg/data/__init__.py"}
    assert expected <= names, sorted(expected - names)
