"""The synthetic scenario-A experiment: deterministic, consistent truth, realistic bright field and stains."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from stainseg.config import load_config
from stainseg.errors import StainsegError
from stainseg.io.atomic import read_csv
from stainseg.io.images import read_image, read_labels
from stainseg.synth import PATTERN, generate_experiment


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_experiment(out, wells=1, sites=2, times=3, size=128, seed=3)
    return out


def test_same_seed_gives_identical_bytes(experiment, tmp_path):
    generate_experiment(tmp_path / "again", wells=1, sites=2, times=3, size=128, seed=3)
    first, second = _files(experiment), _files(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_other_seed_gives_other_images(experiment, tmp_path):
    generate_experiment(tmp_path / "other", wells=1, sites=2, times=3, size=128, seed=4)
    name = "images/A01_s1_t00_z0_BF.tif"
    assert _files(experiment)[name] != (tmp_path / "other" / name).read_bytes()
    assert not np.array_equal(read_labels(experiment / "truth/cells/A01_s1_t00.tif"),
                              read_labels(tmp_path / "other/truth/cells/A01_s1_t00.tif"))


def test_first_frames_do_not_depend_on_number_of_times(experiment, tmp_path):
    generate_experiment(tmp_path / "short", wells=1, sites=1, times=2, size=128, seed=3)
    for name in ("images/A01_s1_t00_z1_BF.tif", "images/A01_s1_t01_z2_BF.tif", "truth/cells/A01_s1_t01.tif"):
        assert (experiment / name).read_bytes() == (tmp_path / "short" / name).read_bytes()


def test_files_layout_and_toml(experiment):
    cfg = load_config(experiment / "experiment.toml")
    assert cfg.objects == "cells" and cfg.channels.input == ["BF"]
    assert (cfg.channels.nuclei, cfg.channels.cytoplasm) == ("Hoechst", "CellTracker")
    assert cfg.endpoint.time == "last" and cfg.split.test_sites == ["2"]
    assert cfg.root_path == experiment / "images"
    rx = re.compile(cfg.pattern)
    assert cfg.pattern == PATTERN
    names = sorted(p.name for p in cfg.root_path.iterdir())
    assert len(names) == 2 * (3 * 3 + 2)
    matches = [rx.fullmatch(n) for n in names]
    assert all(matches)
    stains = [m for m in matches if m["channel"] != "BF"]
    assert {m["time"] for m in stains} == {"02"} and all(m["z"] is None for m in stains)
    assert {m["z"] for m in matches if m["channel"] == "BF"} == {"0", "1", "2"}
    image = read_image(cfg.root_path / "A01_s1_t00_z0_BF.tif")
    assert image.dtype == np.uint16 and image.shape == (128, 128)
    assert 1500 < np.median(image) < 4000
    assert not (experiment / "images" / "A01_s1_t00_Hoechst.tif").exists()


def test_cells_density_and_nuclei_inside(experiment):
    cells = read_labels(experiment / "truth/cells/A01_s1_t02.tif")
    nuclei = read_labels(experiment / "truth/nuclei/A01_s1_t02.tif")
    n = len(np.unique(cells)) - 1
    assert 5 <= n <= 25  # ~ 128^2 / 40^2 = 10 cells, plus partial ones at the border
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # each nucleus lies in its own cell
    border = np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))
    whole = np.setdiff1d(np.unique(cells)[1:], border)  # cells not cut by the image border
    assert len(np.intersect1d(whole, np.unique(nuclei))) >= 0.9 * len(whole)
    areas = np.bincount(cells.ravel())[whole]
    assert 400 < np.median(areas) < 2500  # cells ~ 25-55 px across


def test_stains_match_true_labels(experiment):
    cells = read_labels(experiment / "truth/cells/A01_s1_t02.tif")
    nuclei = read_labels(experiment / "truth/nuclei/A01_s1_t02.tif")
    hoechst = read_image(experiment / "images/A01_s1_t02_Hoechst.tif").astype(float)
    tracker = read_image(experiment / "images/A01_s1_t02_CellTracker.tif").astype(float)
    outside = ~ndi.binary_dilation(cells > 0, iterations=4)
    background = np.median(hoechst[outside])
    ids = np.unique(nuclei)[1:]
    means = ndi.mean(hoechst, nuclei, ids)
    assert np.all(means > background + 5 * hoechst[outside].std())
    assert tracker[cells > 0].mean() > 1.5 * tracker[outside].mean()
    assert hoechst[nuclei > 0].mean() > tracker[cells > 0].mean()  # cytoplasm stain is dimmer


def test_consecutive_frames_overlap(experiment):
    rows = read_csv(experiment / "truth/tracks.csv")
    label_of = {(r["site"], int(r["time"]), r["track_id"]): int(r["label"]) for r in rows}
    frames = [read_labels(experiment / f"truth/cells/A01_s1_t{t:02d}.tif") for t in range(3)]
    ious = []
    for (site, t, track), label in label_of.items():
        after = label_of.get((site, t + 1, track))
        if site != "1" or after is None:
            continue
        a, b = frames[t] == label, frames[t + 1] == after
        ious.append(np.count_nonzero(a & b) / np.count_nonzero(a | b))
    assert len(ious) >= 10
    assert np.median(ious) > 0.5 and min(ious) > 0.0
    assert np.median(ious) < 0.99  # they do move and change shape


def test_division_recorded_with_parent(tmp_path):
    out = tmp_path / "long"
    generate_experiment(out, wells=1, sites=1, times=12, size=128, seed=0)
    rows = read_csv(out / "truth/tracks.csv")
    first_seen = {}
    for r in rows:
        first_seen.setdefault(r["track_id"], int(r["time"]))
    last_seen = {r["track_id"]: int(r["time"]) for r in rows}
    daughters = {r["track_id"]: r["parent_track_id"] for r in rows if r["parent_track_id"] != "0"}
    assert daughters, "no division in 12 frames"
    checked = 0
    for track, parent in daughters.items():
        if parent in last_seen:  # the mother is never seen again once a daughter is
            assert last_seen[parent] < first_seen[track]
            checked += last_seen[parent] == first_seen[track] - 1  # divided inside the field
    assert checked >= 1
    siblings = list(daughters.values())
    assert any(siblings.count(p) == 2 for p in siblings)
    assert set(rows[0]) >= {"well", "site", "time", "label", "track_id", "parent_track_id"}


def test_bright_field_halo_flips_with_defocus(experiment):
    cells = read_labels(experiment / "truth/cells/A01_s2_t01.tif") > 0
    rim = ndi.binary_dilation(cells, iterations=2) & ~cells
    interior = ndi.binary_erosion(cells, iterations=6)
    planes = [read_image(experiment / f"images/A01_s2_t01_z{z}_BF.tif").astype(float) for z in range(3)]
    # relative to the mean of the stack, which cancels the uneven illumination (the same for every plane)
    mean = ndi.gaussian_filter(np.mean(planes, axis=0), 1.0)
    contrast = [(p / mean - 1.0) for p in planes]
    (rim_below, rim_focus, rim_above) = (c[rim].mean() for c in contrast)
    (in_below, _, in_above) = (c[interior].mean() for c in contrast)
    assert rim_above > 0.03 and rim_below < -0.03  # bright rim above focus, dark below
    assert in_above < -0.01 and in_below > 0.01  # and the interior the other way round
    assert abs(rim_focus) < 0.5 * min(abs(rim_above), abs(rim_below))  # weak contrast in focus


def test_preview_png(tmp_path):
    out = tmp_path / "p"
    generate_experiment(out, sites=1, times=1, size=96, seed=1, preview=True)
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_image(out / "preview.png").shape[0] > 300


def test_bad_arguments_and_foreign_folder(tmp_path):
    with pytest.raises(StainsegError, match="--sites"):
        generate_experiment(tmp_path / "a", sites=0)
    with pytest.raises(StainsegError, match="--size"):
        generate_experiment(tmp_path / "a", size=16)
    (tmp_path / "b" / "images").mkdir(parents=True)
    (tmp_path / "b" / "images" / "mine.tif").write_bytes(b"x")
    with pytest.raises(StainsegError, match="another experiment"):
        generate_experiment(tmp_path / "b", size=64, times=1)
