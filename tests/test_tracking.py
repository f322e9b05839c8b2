"""Tracking: links, divisions and end-point identity on a synthetic time-lapse with true tracks."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from stainseg.io.images import read_labels
from stainseg.synth import generate_experiment
from stainseg.tracking import centroids, endpoint_identity, link_accuracy, track_frames


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> tuple[list[np.ndarray], dict]:
    out = tmp_path_factory.mktemp("movie")
    generate_experiment(out, wells=1, sites=1, times=8, size=256, seed=1)
    frames = [read_labels(out / "truth" / "cells" / f"A01_s1_t{t:02d}.tif") for t in range(8)]
    truth = {(int(r["time"]), int(r["label"])): (int(r["track_id"]), int(r["parent_track_id"]))
             for r in csv.DictReader(open(out / "truth" / "tracks.csv"))}
    return frames, truth


def test_centroids() -> None:
    labels = np.zeros((20, 20), np.uint16)
    labels[2:5, 2:5] = 3
    labels[10:20, 0:2] = 9
    ids, cents = centroids(labels)
    assert ids.tolist() == [3, 9]
    np.testing.assert_allclose(cents, [[3, 3], [14.5, 0.5]])


def test_tracks_true_labels_perfectly(movie) -> None:
    frames, truth = movie
    rows = track_frames(frames)
    assert len(rows) == sum(len(np.unique(f)) - 1 for f in frames)
    acc = link_accuracy(frames, truth, frames, rows)
    assert acc["links"] > 100
    assert acc["link_accuracy"] > 0.97
    divisions_true = {tr for tr, parent in truth.values() if parent}
    divisions_found = {r["track_id"] for r in rows if r["parent_track_id"]}
    assert len(divisions_true) > 0 and abs(len(divisions_found) - len(divisions_true)) <= 2


def test_shuffled_labels_break_links(movie) -> None:
    """A tracker that ignored positions would not be caught by the test above; this one would."""
    frames, truth = movie
    rng = np.random.default_rng(0)
    rows = track_frames(frames)
    shuffled = [dict(r) for r in rows]
    ids = [r["track_id"] for r in shuffled]
    rng.shuffle(ids)
    for r, i in zip(shuffled, ids):
        r["track_id"] = i
    assert link_accuracy(frames, truth, frames, shuffled)["link_accuracy"] < 0.2


def test_endpoint_identity_reaches_every_last_cell(movie) -> None:
    frames, _ = movie
    rows = track_frames(frames)
    ident = endpoint_identity(rows)
    last = {r["label"] for r in rows if r["frame"] == len(frames) - 1}
    assert set(v for v in ident.values() if v) == last
    first_tracks = {r["track_id"] for r in rows if r["frame"] == 0}
    assert sum(1 for t in first_tracks if ident[t]) >= 0.9 * len(first_tracks)


def test_empty_frames() -> None:
    assert track_frames([np.zeros((10, 10), np.uint16)] * 3) == []
