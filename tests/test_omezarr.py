"""OME-Zarr output: an HCS plate of label fields (T axis per site) and a block-wise large label image."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.draw import disk

from stainseg.errors import StainsegError
from stainseg.io.images import write_labels
from stainseg.io.omezarr import read_field_labels, write_plate_labels


def _cells(seed: int, shape=(96, 128), n=12) -> np.ndarray:
    """A realistic label image: non-overlapping-ish discs with ids 1..n."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    for i in range(1, n + 1):
        rr, cc = disk((rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)), rng.integers(4, 9), shape=shape)
        labels[rr, cc] = i
    return labels


@pytest.fixture()
def plate_rows(tmp_path):
    """Index rows of 2 wells x 2 sites x 3 time points; B02 site 2 lacks time 01 (a failed image set)."""
    rows, truth = [], {}
    for w, well in enumerate(["A01", "B02"]):
        for site in ("1", "2"):
            for t in ("00", "01", "02"):
                if (well, site, t) == ("B02", "2", "01"):
                    continue
                labels = _cells(100 * w + 10 * int(site) + int(t))
                name = f"{well}_s{site}_t{t}"
                path = write_labels(tmp_path / "labels" / f"{name}.tif", labels)
                rows.append({"name": name, "well": well, "site": site, "time": t, "cells": 12, "label_file": str(path)})
                truth[(well, site, t)] = labels
    return rows, truth


def test_plate_has_wells_sites_times_and_label_values(tmp_path, plate_rows):
    rows, truth = plate_rows
    path = write_plate_labels(tmp_path / "labels.ome.zarr", rows)
    root = zarr.open_group(str(path), mode="r")
    plate = root.attrs["plate"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert [c["name"] for c in plate["columns"]] == ["1", "2"]
    assert [w["path"] for w in plate["wells"]] == ["A/1", "B/2"]
    assert plate["field_count"] == 2 and plate["version"] == "0.4"
    assert root.attrs["stainseg"]["times"] == ["00", "01", "02"]
    for well in ("A/1", "B/2"):
        assert [im["path"] for im in root[well].attrs["well"]["images"]] == ["0", "1"]
    field = root["B/2/1"]
    ms = field.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["t", "y", "x"]
    assert field.attrs["stainseg"]["missing_times"] == ["01"]
    for (well, site, t), labels in truth.items():
        got = read_field_labels(path, well, int(site) - 1)
        assert got.shape == (3, 96, 128) and got.dtype == np.uint32
        np.testing.assert_array_equal(got[int(t)], labels)
        assert set(np.unique(got[int(t)])) == set(np.unique(labels))
    assert not read_field_labels(path, "B02", 1)[1].any()  # the missing time point is an empty plane


def test_plate_opens_with_ome_zarr_reader(tmp_path, plate_rows):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader

    rows, truth = plate_rows
    path = write_plate_labels(tmp_path / "labels.ome.zarr", rows)
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes and any(isinstance(s, Plate) for s in nodes[0].specs)
    mosaic = np.asarray(nodes[0].data[0])  # napari-ome-zarr shows this: first field of each well, tiled
    assert mosaic.shape == (3, 2 * 96, 2 * 128)
    np.testing.assert_array_equal(mosaic[2, :96, :128], truth[("A01", "1", "02")])
    np.testing.assert_array_equal(mosaic[0, 96:, 128:], truth[("B02", "1", "00")])
    assert not mosaic[:, :96, 128:].any()  # well A02 does not exist


def test_plate_replaced_atomically_and_no_leftovers(tmp_path, plate_rows):
    rows, _ = plate_rows
    path = write_plate_labels(tmp_path / "p.ome.zarr", rows)
    path = write_plate_labels(tmp_path / "p.ome.zarr", rows[:3])  # rewrite: only A01 site 1
    root = zarr.open_group(str(path), mode="r")
    assert [w["path"] for w in root.attrs["plate"]["wells"]] == ["A/1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "p.ome.zarr"]


def test_plate_errors_are_one_line(tmp_path, plate_rows):
    rows, _ = plate_rows
    with pytest.raises(StainsegError, match="well"):
        write_plate_labels(tmp_path / "x.ome.zarr", [{k: v for k, v in r.items() if k != "well"} for r in rows])
    with pytest.raises(StainsegError, match="plate well name"):
        write_plate_labels(tmp_path / "x.ome.zarr", [{**rows[0], "well": "ctrl"}])
    with pytest.raises(StainsegError, match="two image sets"):
        write_plate_labels(tmp_path / "x.ome.zarr", [rows[0], {**rows[0], "name": "dup"}])
    assert not (tmp_path / "x.ome.zarr").exists()


def test_plate_without_time_is_yx(tmp_path, plate_rows):
    rows, truth = plate_rows
    flat = [{k: v for k, v in r.items() if k != "time"} for r in rows if r["time"] == "00"]
    path = write_plate_labels(tmp_path / "flat.ome.zarr", flat)
    field = zarr.open_group(str(path), mode="r")["A/1/1"]
    assert [a["name"] for a in field.attrs["multiscales"][0]["axes"]] == ["y", "x"]
    np.testing.assert_array_equal(read_field_labels(path, "A01", 1), truth[("A01", "2", "00")])
