"""Follow segmented cells through a time-lapse (linear assignment with divisions, via laptrack).

The paper's motivation is following single cells; this links each frame's labels to the next,
detects divisions, and carries the end-point identity (the stained cell) back through the movie.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label ids, (n, 2) centroids y, x) of an instance label image, vectorised with bincount.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((10, 10), int); labels[0:2, 0:2] = 1; labels[5:9, 4:6] = 3
    >>> ids, yx = centroids(labels)
    >>> ids.tolist(), yx.tolist()
    ([1, 3], [[0.5, 0.5], [6.5, 4.5]])
    """
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 1
    area = np.bincount(flat, minlength=n)
    yy, xx = np.indices(labels.shape)
    sy = np.bincount(flat, weights=yy.ravel(), minlength=n)
    sx = np.bincount(flat, weights=xx.ravel(), minlength=n)
    ids = np.nonzero(area)[0]
    ids = ids[ids > 0]
    return ids, np.stack([sy[ids] / area[ids], sx[ids] / area[ids]], axis=1) if ids.size else np.zeros((0, 2))


def track_frames(frames: Sequence[np.ndarray], max_distance: float | None = None, divisions: bool = True) -> list[dict[str, Any]]:
    """Link the objects of consecutive label images into tracks.

    Parameters
    ----------
    frames : sequence of 2-D label images
        One per time point, in time order.
    max_distance : float, optional
        Largest centroid displacement (px) between frames; default: the median object
        diameter (cells rarely move more than their own size between frames).
    divisions : bool
        Allow one track to split into two (mitosis).

    Returns
    -------
    list of dict
        One row per (frame, label): ``frame``, ``label``, ``track_id`` (1-based),
        ``parent_track_id`` (0 when the track does not start by division), ``y``, ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> frames = [np.zeros((40, 40), int) for _ in range(3)]
    >>> for t, frame in enumerate(frames):             # one cell moving right by 2 px per frame
    ...     frame[10:16, 10 + 2 * t:16 + 2 * t] = 1
    >>> rows = track_frames(frames)
    >>> [(r["frame"], r["track_id"], r["parent_track_id"]) for r in rows]
    [(0, 1, 0), (1, 1, 0), (2, 1, 0)]
    """
    import pandas as pd
    from laptrack import LapTrack

    rows = []
    areas = []
    for t, labels in enumerate(frames):
        ids, cents = centroids(np.asarray(labels))
        areas.extend(np.bincount(np.asarray(labels).ravel())[ids].tolist())
        rows += [{"frame": t, "label": int(i), "y": float(c[0]), "x": float(c[1])} for i, c in zip(ids, cents)]
    if not rows:
        return []
    if max_distance is None:
        max_distance = float(2.0 * np.sqrt(np.median(areas) / np.pi)) if areas else 20.0
    df = pd.DataFrame(rows)
    cutoff = float(max_distance) ** 2
    lt = LapTrack(cutoff=cutoff, splitting_cutoff=cutoff if divisions else False, merging_cutoff=False, gap_closing_cutoff=False)
    track_df, split_df, _ = lt.predict_dataframe(df, coordinate_cols=["y", "x"], frame_col="frame", only_coordinate_cols=False)
    track_df = track_df.reset_index(drop=True)
    parents = {int(r.child_track_id): int(r.parent_track_id) for r in split_df.itertuples()} if len(split_df) else {}
    out = []
    for r in track_df.itertuples():
        tid = int(r.track_id) + 1
        out.append({"frame": int(r.frame), "label": int(r.label), "track_id": tid,
                    "parent_track_id": parents[int(r.track_id)] + 1 if int(r.track_id) in parents else 0,
                    "y": round(float(r.y), 2), "x": round(float(r.x), 2)})
    out.sort(key=lambda d: (d["frame"], d["label"]))
    return out


def endpoint_identity(rows: list[dict[str, Any]]) -> dict[int, int]:
    """For each track, the end-point label it leads to (itself or through its daughters); 0 when none.

    This carries the stained cell's identity back through the movie: every earlier cell gets
    the label of the cell it becomes at the last frame (its first descendant there).

    Examples
    --------
    >>> rows = [{"frame": 0, "label": 1, "track_id": 1, "parent_track_id": 0},
    ...         {"frame": 1, "label": 4, "track_id": 2, "parent_track_id": 1},
    ...         {"frame": 1, "label": 5, "track_id": 3, "parent_track_id": 1}]
    >>> endpoint_identity(rows)                        # the mother leads to its first daughter's label
    {1: 4, 2: 4, 3: 5}
    """
    if not rows:
        return {}
    last = max(r["frame"] for r in rows)
    end_label = {r["track_id"]: r["label"] for r in rows if r["frame"] == last}
    children: dict[int, list[int]] = {}
    for r in rows:
        if r["parent_track_id"]:
            children.setdefault(r["parent_track_id"], [])
            if r["track_id"] not in children[r["parent_track_id"]]:
                children[r["parent_track_id"]].append(r["track_id"])

    def resolve(tid: int, depth: int = 0) -> int:
        if tid in end_label:
            return end_label[tid]
        for child in sorted(children.get(tid, [])):
            if depth < 1000 and (found := resolve(child, depth + 1)):
                return found
        return 0

    return {tid: resolve(tid) for tid in {r["track_id"] for r in rows}}


def match_iou50(truth: np.ndarray, pred: np.ndarray) -> dict[int, int]:
    """Truth label → predicted label for pairs with IoU > 0.5 (such pairs are always one-to-one).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((10, 10), int); truth[0:4, 0:4] = 1; truth[6:9, 6:9] = 2
    >>> pred = np.zeros((10, 10), int); pred[0:4, 0:3] = 7
    >>> match_iou50(truth, pred)
    {1: 7}
    """
    from stainseg.evaluate.matching import best_matches

    m = best_matches(truth, pred)
    keep = m.iou > 0.5
    return dict(zip(m.truth_label[keep].tolist(), m.pred_label[keep].tolist()))


def link_accuracy(truth_frames: Sequence[np.ndarray], truth_tracks: dict[tuple[int, int], tuple[int, int]],
                  pred_frames: Sequence[np.ndarray], pred_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Fraction of true frame-to-frame links that the predicted tracks reproduce.

    A true link joins object a at frame t to object b at t+1 (same track, or mother → daughter).
    It counts as correct when a and b are matched (IoU > 0.5) to predicted objects p and q and the
    predicted tracks link p to q (same track, or q's track is a daughter of p's).

    Parameters
    ----------
    truth_tracks : dict
        (frame, truth label) → (track id, parent track id).

    Examples
    --------
    >>> import numpy as np
    >>> frames = [np.zeros((40, 40), int) for _ in range(2)]
    >>> frames[0][5:12, 5:12] = 1; frames[1][6:13, 6:13] = 1
    >>> truth_tracks = {(0, 1): (1, 0), (1, 1): (1, 0)}
    >>> link_accuracy(frames, truth_tracks, frames, track_frames(frames))["link_accuracy"]
    1.0
    """
    pred_track = {(r["frame"], r["label"]): (r["track_id"], r["parent_track_id"]) for r in pred_rows}
    total = correct = 0
    for t in range(len(truth_frames) - 1):
        m0 = match_iou50(truth_frames[t], pred_frames[t])
        m1 = match_iou50(truth_frames[t + 1], pred_frames[t + 1])
        by_track0 = {tr: lab for (f, lab), (tr, _) in truth_tracks.items() if f == t}
        for (f, lab), (tr, parent) in truth_tracks.items():
            if f != t + 1:
                continue
            src = by_track0.get(tr) or by_track0.get(parent)
            if src is None:
                continue
            total += 1
            p, q = m0.get(src), m1.get(lab)
            if p is None or q is None:
                continue
            tp, tq = pred_track.get((t, p)), pred_track.get((t + 1, q))
            if tp and tq and (tp[0] == tq[0] or tq[1] == tp[0]):
                correct += 1
    return {"links": total, "correct": correct, "link_accuracy": correct / total if total else float("nan")}
