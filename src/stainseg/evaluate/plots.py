"""Evaluation figures (METHOD 6.2, 6.3, 6.5): F-score curves as in the paper's Fig. 2, per-group
box plots of the headline percentage, and AP / F1 against the IoU threshold.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg, no pyplot state, safe in
threads and without a display) and written atomically as PNG. Each function returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from stainseg.evaluate.matching import FSCORE_THRESHOLDS, fscore_curve
from stainseg.io.atomic import atomic_path

BLUE = "#1f5fbf"
MAGENTA = "#c2189b"
_CYCLE = ("#1b9e77", "#d95f02", "#7570b3", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def curve_colour(name: str, index: int = 0) -> str:
    """Colour of a named curve: names with 'mangt' magenta, 'cpgt' blue (as in the paper), else a cycle.

    Examples
    --------
    >>> curve_colour("cpgt"), curve_colour("mangt")
    ('#1f5fbf', '#c2189b')
    """
    lowered = name.lower()
    if "mangt" in lowered or "manual" in lowered:
        return MAGENTA
    if "cpgt" in lowered or "auto" in lowered:
        return BLUE
    return _CYCLE[index % len(_CYCLE)]


def _new_figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _label_axes(ax, xlabel: str, ylabel: str, title: str, legend: bool) -> None:
    """Axis labels, title, a light grid and (when there are lines) the legend in the lower left."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="lower left", fontsize="small")


def plot_fscore_curves(
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    per_image: Mapping[str, Sequence[np.ndarray]] | None = None,
    thresholds: np.ndarray = FSCORE_THRESHOLDS,
    headline: float = 0.6,
    title: str = "Objects segmented at each F-score threshold",
) -> Path:
    """The paper's Fig. 2: % of ground-truth objects with F-score >= t, against t.

    Parameters
    ----------
    curves : mapping of str to ndarray
        Curve name (e.g. ``'cpgt'``, ``'mangt'``) to the per-object F-scores pooled over images.
    path : str or Path
        Output PNG.
    per_image : mapping of str to sequence of ndarray, optional
        Curve name to the per-object F-scores of each image; drawn as box plots (over images) of the
        percentage at thresholds 0, 0.1, ..., 1, as the paper does for the sites of a well.
    thresholds : ndarray
        Thresholds of the curves.
    headline : float
        Threshold marked by a dotted line, with each curve's value in the legend.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> path = plot_fscore_curves({"cpgt": np.array([0.9, 0.8, 0.3])}, tempfile.mkdtemp() + "/fscore.png")
    >>> path.suffix, path.stat().st_size > 1000
    ('.png', True)
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    for i, (name, fscores) in enumerate(curves.items()):
        colour = curve_colour(name, i)
        values = fscore_curve(fscores, thresholds)
        at = float(fscore_curve(fscores, np.array([headline]))[0])
        ax.plot(thresholds, values, color=colour, lw=2,
                label=f"{name}: {at:.1f} % at F ≥ {headline:g} (n = {np.size(fscores)})")
        if per_image and name in per_image and len(per_image[name]):
            ticks = np.round(np.linspace(0.0, 1.0, 11), 2)
            data = [fscore_curve(f, ticks) for f in per_image[name] if np.size(f)]
            if data:
                table = np.array(data)
                ax.boxplot([table[:, j] for j in range(ticks.size)], positions=ticks, widths=0.04,
                           manage_ticks=False, patch_artist=True,
                           boxprops={"facecolor": "none", "edgecolor": colour},
                           medianprops={"color": colour}, whiskerprops={"color": colour},
                           capprops={"color": colour}, flierprops={"markeredgecolor": colour, "markersize": 3})
    ax.axvline(headline, color="0.5", ls=":", lw=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 102)
    _label_axes(ax, "F-score threshold", "% of ground-truth objects with F-score ≥ threshold", title, legend=bool(curves))
    return _save(fig, path)


def plot_group_boxplot(
    values: Mapping[str, Sequence[float]],
    path: str | Path,
    ylabel: str = "% of objects with F-score ≥ 0.6",
    title: str = "Per-image score by group",
) -> Path:
    """Box plots of a per-image value (e.g. % F >= 0.6 per site) grouped by a key (e.g. well).

    Each image is also drawn as a dot; NaN values (images without objects) are left out.

    Examples
    --------
    >>> import tempfile
    >>> path = plot_group_boxplot({"A01": [80.0, 85.0], "B02": [60.0, 70.0, 65.0]}, tempfile.mkdtemp() + "/wells.png")
    >>> path.is_file()
    True
    """
    fig = _new_figure(max(5.5, 1.0 + 0.8 * len(values)), 4.5)
    ax = fig.add_subplot()
    names = list(values)
    data = [np.asarray([v for v in values[n] if v is not None and np.isfinite(v)], dtype=float) for n in names]
    keep = [i for i, d in enumerate(data) if d.size]
    if keep:
        positions = np.arange(1, len(keep) + 1)
        ax.boxplot([data[i] for i in keep], positions=positions, widths=0.5, showfliers=False,
                   medianprops={"color": BLUE, "lw": 2})
        rng = np.random.default_rng(0)
        for pos, i in zip(positions, keep):
            jitter = rng.uniform(-0.12, 0.12, data[i].size)
            ax.plot(pos + jitter, data[i], "o", color=MAGENTA, ms=3, alpha=0.7)
        ax.set_xticks(positions, [f"{names[i]}\n(n = {data[i].size})" for i in keep],
                      rotation=30 if len(keep) > 6 else 0)
    else:
        ax.text(0.5, 0.5, "no images with ground-truth objects", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(0, 102)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_ap_iou(
    sweeps: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str = "Matching scores against the IoU threshold",
) -> Path:
    """AP (= TP / (TP + FP + FN)) and F1 against the IoU threshold, one colour per named sweep.

    Parameters
    ----------
    sweeps : mapping of str to mapping
        Name to a sweep with ``thresholds``, ``ap`` and ``f1`` (from ``match_iou`` or the
        ``iou_sweep`` of ``evaluate_pair`` / ``pooled_scores``).

    Examples
    --------
    >>> import tempfile
    >>> sweep = {"thresholds": [0.5, 0.75], "ap": [0.8, 0.5], "f1": [0.9, 0.7]}
    >>> plot_ap_iou({"network": sweep}, tempfile.mkdtemp() + "/ap.png").is_file()
    True
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    for i, (name, sweep) in enumerate(sweeps.items()):
        colour = curve_colour(name, i)
        thresholds = np.asarray(sweep["thresholds"], dtype=float)
        ax.plot(thresholds, np.asarray(sweep["ap"], dtype=float), "-o", color=colour, ms=4,
                label=f"{name} AP (mean {np.mean(sweep['ap']):.3f})")
        ax.plot(thresholds, np.asarray(sweep["f1"], dtype=float), "--s", color=colour, ms=3, alpha=0.8,
                label=f"{name} F1")
    ax.set_ylim(0, 1.02)
    _label_axes(ax, "IoU threshold", "score", title, legend=bool(sweeps))
    return _save(fig, path)
