"""Experiment layout on every real naming scheme and on synthetic trees with problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stainseg.config import config_from_dict
from stainseg.errors import StainsegError
from stainseg.io.images import write_image
from stainseg.io.layout import endpoint_sets, is_test, scan


def held_out(cfg, sets) -> tuple[list, list]:
    """(train, test) image sets by the experiment's [split] rules, as the stages pick them with ``is_test``."""
    return [s for s in sets if not is_test(cfg, s)], [s for s in sets if is_test(cfg, s)]


def cfg_for(root: Path, pattern: str, inputs: list[str], nuclei: str, **extra):
    return config_from_dict({"root": str(root), "pattern": pattern, "channels": {"input": inputs, "nuclei": nuclei}, **extra})


def test_bbbc022_names(bbbc022: Path) -> None:
    cfg = cfg_for(bbbc022 / "images", r"plate1_(?P<well>[A-P]\d{2})_site(?P<site>\d)_Ch(?P<channel>\d)\.tif",
                  ["2", "3", "4", "5"], "1", split={"test_sites": ["2"]})
    layout = scan(cfg)
    assert len(layout.image_sets) == 6 and not layout.unmatched and not layout.incomplete
    assert [s.name for s in layout.image_sets][:2] == ["A14_s1", "A14_s2"]
    train, test = held_out(cfg, layout.image_sets)
    assert len(train) == 3 and len(test) == 3
    stack = layout.image_sets[0].load_stack(cfg.channels.input)
    assert stack.shape == (4, 520, 696) and stack.dtype == np.float32


def test_bbbc039_names_with_uuid(bbbc039: Path) -> None:
    pattern = r"IXMtest_(?P<well>[A-P]\d{2})_s(?P<site>\d)_w(?P<channel>1)(?P<uuid>[0-9A-F-]+)\.tif"
    layout = scan(cfg_for(bbbc039 / "images", pattern, ["1"], "1"))
    assert len(layout.image_sets) == 100 and not layout.duplicates
    # without the uuid, two fields of P07 s8 (different plates) collide: reported, not silently merged
    loose = scan(cfg_for(bbbc039 / "images", r"IXMtest_(?P<well>[A-P]\d{2})_s(?P<site>\d)_w(?P<channel>1)[0-9A-F-]+\.tif", ["1"], "1"))
    assert len(loose.image_sets) == 99 and len(loose.duplicates) == 1 and "P07" in loose.duplicates[0]


def test_sephace_z_ordered_numerically(sephace: Path) -> None:
    pattern = r"(?P<channel>fine|init|fl)(?:_Point\d+_empty-Time\d+s-Z(?P<z>[\d.]+))?\.tif"
    layout = scan(cfg_for(sephace, pattern, ["fine"], "fl"))
    (iset,) = layout.image_sets
    assert iset.z_values["fine"] == ["1341.95", "1352.25", "1362.00"]
    assert iset.z_values["init"] == ["1327.60", "1351.60", "1376.80"]
    assert iset.load("fl").shape == (1, 1024, 1344)
    assert iset.load_stack(["fine"]).shape == (3, 1024, 1344)


def _tree(root: Path, names: list[str], shape=(16, 16)) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(root / name, np.ones(shape, np.uint16))


PATTERN = r"(?P<well>[A-P]\d{2})_s(?P<site>\d+)_t(?P<time>\d+)(?:_z(?P<z>\d))?_(?P<channel>[A-Za-z]+)\.tif"


def test_time_lapse_endpoint_missing_and_unmatched(tmp_path: Path) -> None:
    names = [f"A01_s{s}_t{t:02d}_z{z}_BF.tif" for s in (1, 2) for t in (1, 2, 10) for z in (0, 1, 2)]
    names += [f"A01_s{s}_t10_{c}.tif" for s in (1, 2) for c in ("Hoechst", "CellTracker")]
    names.remove("A01_s2_t02_z1_BF.tif")  # a missing z-plane
    names += ["notes.tif", "A01_s1_t01_z0_BF_copy.tif"]
    _tree(tmp_path / "img", names)
    cfg = cfg_for(tmp_path / "img", PATTERN, ["BF"], "Hoechst", split={"test_sites": ["2"]})
    layout = scan(cfg)
    assert len(layout.image_sets) == 6
    assert len(layout.unmatched) == 2
    assert layout.incomplete == ["A01_s2_t02: channel 'BF' has 2 of 3 z-planes"]
    ends = endpoint_sets(cfg, layout.image_sets)
    assert sorted(s.name for s in ends) == ["A01_s1_t10", "A01_s2_t10"]  # t10 > t02 numerically
    assert "Hoechst" in ends[0].channels and "z" not in ends[0].fields
    train, test = held_out(cfg, ends)
    assert [s.fields["site"] for s in train] == ["1"] and [s.fields["site"] for s in test] == ["2"]
    assert "summary" and "2 files match no pattern" in layout.summary()


def test_no_match_and_missing_root(tmp_path: Path) -> None:
    _tree(tmp_path / "img", ["foo.tif"])
    with pytest.raises(StainsegError, match="pattern matches no image file"):
        scan(cfg_for(tmp_path / "img", PATTERN, ["BF"], "Hoechst"))
    with pytest.raises(StainsegError, match="is not a folder"):
        scan(cfg_for(tmp_path / "nowhere", PATTERN, ["BF"], "Hoechst"))


def test_mismatched_shapes_named(tmp_path: Path) -> None:
    _tree(tmp_path / "img", ["A01_s1_t01_z0_BF.tif"], shape=(16, 16))
    _tree(tmp_path / "img", ["A01_s1_t01_Hoechst.tif"], shape=(16, 20))
    (iset,) = scan(cfg_for(tmp_path / "img", PATTERN, ["BF"], "Hoechst")).image_sets
    with pytest.raises(StainsegError, match="A01_s1_t01_Hoechst.tif.*differs"):
        iset.load_stack(["BF", "Hoechst"])
    with pytest.raises(StainsegError, match="has no 'GFP' images"):
        iset.load("GFP")


def test_test_fraction_is_seeded(tmp_path: Path) -> None:
    names = [f"A{w:02d}_s{s}_t01_BF.tif" for w in range(1, 6) for s in range(1, 9)]
    _tree(tmp_path / "img", names)
    cfg = cfg_for(tmp_path / "img", PATTERN, ["BF"], "BF", split={"test_fraction": 0.25, "seed": 3})
    sets = scan(cfg).image_sets
    a = [s.name for s in held_out(cfg, sets)[1]]
    b = [s.name for s in held_out(cfg, sets)[1]]
    assert a == b and 3 <= len(a) <= 20
