"""The ``evaluate`` file stage: pair label files of two folders, score them, write tables and plots.

``stainseg evaluate --truth DIR --pred DIR -o OUT`` calls :func:`evaluate_folders`; a pipeline that
holds the arrays in memory calls :func:`stainseg.evaluate.batch.evaluate_arrays`. Both give the same dict.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from stainseg.errors import StainsegError
from stainseg.evaluate import plots
from stainseg.evaluate.batch import GroupBy, _check_pair, _evaluate_items, evaluate_arrays, image_groups
from stainseg.evaluate.matching import IOU_THRESHOLDS
from stainseg.io.atomic import write_csv, write_json
from stainseg.io.images import PNG_SUFFIXES, TIFF_SUFFIXES, is_ome_zarr, read_labels
from stainseg.io.omezarr import is_plate

log = logging.getLogger(__name__)

LABEL_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES
"""Suffixes of label image files; a label image may also be an OME-Zarr folder (``<name>.ome.zarr``)."""
PER_OBJECT_COLUMNS = ("image", "group", "truth_label", "fscore", "best_pred_label", "iou")

def label_stem(path: str | Path) -> str:
    """File name without its image suffix (``a.ome.tif`` -> ``a``, ``b.ome.zarr`` -> ``b``), the key that pairs files.

    Examples
    --------
    >>> label_stem("OUT/labels/big.ome.zarr"), label_stem("masks/A01_s1.png")
    ('big', 'A01_s1')
    """
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr") + LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def find_label_files(folder: str | Path) -> dict[str, Path]:
    """Label images (TIFF / PNG files, OME-Zarr ``<name>.ome.zarr`` folders) in ``folder`` by stem; a folder
    holding only ``labels/`` is entered.

    The OME-Zarr label images are those of a block-wise ``stainseg segment``; an OME-Zarr plate
    (``labels.ome.zarr`` of ``--format ome-zarr``) is not a label image and is passed over. Hidden
    files (half-written temporaries) are ignored. Two files with one stem are an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise StainsegError("folder not found; give the folder of label images", folder)
    found = _scan(folder)
    if not found and (folder / "labels").is_dir():  # the -o folder of `segment` / `groundtruth`
        found = _scan(folder / "labels")
    return found


def _scan(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not _is_label_image(path):
            continue
        stem = label_stem(path)
        if stem in found:
            raise StainsegError(f"two label files share the name {stem!r} ({found[stem].name} and {path.name}); "
                                "keep one of them", folder)
        found[stem] = path
    return found


def _is_label_image(path: Path) -> bool:
    if path.is_dir():
        return is_ome_zarr(path) and not is_plate(path)
    return path.is_file() and path.name.lower().endswith(LABEL_SUFFIXES)


def pair_label_files(truth_dir: str | Path, pred_dir: str | Path) -> tuple[dict[str, tuple[Path, Path]], dict[str, Any]]:
    """Pair ground-truth and predicted label files by stem.

    Returns
    -------
    pairs : dict
        Stem to (truth path, prediction path), sorted by stem.
    unpaired : dict
        ``truth_only`` and ``pred_only`` counts and up to five ``*_examples`` each.

    Raises
    ------
    StainsegError
        A folder is missing or empty, or no file names match.
    """
    truth = find_label_files(truth_dir)
    pred = find_label_files(pred_dir)
    for folder, files in ((truth_dir, truth), (pred_dir, pred)):
        if not files:
            raise StainsegError("holds no label images (.tif, .tiff, .png, .ome.zarr); give the folder of label images", folder)
    common = sorted(set(truth) & set(pred))
    truth_only = sorted(set(truth) - set(pred))
    pred_only = sorted(set(pred) - set(truth))
    unpaired = {"truth_only": len(truth_only), "pred_only": len(pred_only),
                "truth_only_examples": truth_only[:5], "pred_only_examples": pred_only[:5]}
    if not common:
        raise StainsegError(
            f"no file names match between ground truth {truth_dir} (e.g. {truth_only[:2]}) and predictions "
            f"{pred_dir} (e.g. {pred_only[:2]}); files are paired by name without suffix", pred_dir)
    if truth_only or pred_only:
        log.warning("evaluate: %d ground-truth files have no prediction (e.g. %s), %d predictions have no "
                    "ground truth (e.g. %s); they are left out", len(truth_only), truth_only[:3],
                    len(pred_only), pred_only[:3])
    return {stem: (truth[stem], pred[stem]) for stem in common}, unpaired


def write_evaluation(result: Mapping[str, Any], out_dir: str | Path, name: str = "prediction",
                     extra: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_object.csv`` and the three plots of an evaluation result.

    Parameters
    ----------
    result : dict
        From :func:`evaluate_arrays`.
    out_dir : str or Path
        Output folder (created).
    name : str
        Curve name in the plots (e.g. ``'cpgt'`` or ``'mangt'`` selects the paper's colours).
    extra : mapping, optional
        More top-level entries for ``metrics.json`` (e.g. the input folders).
    """
    out = Path(out_dir)
    overall, groups, images = result["overall"], result["groups"], result["images"]
    metrics = {**(extra or {}), "n_images": len(images), "overall": overall, "groups": groups, "images": images}
    paths = {"metrics": out / "metrics.json", "per_object": out / "per_object.csv"}
    write_json(paths["metrics"], _json_ready(metrics))
    write_csv(paths["per_object"], result["per_object"], PER_OBJECT_COLUMNS)
    fscores = result["fscores"]
    pooled = np.concatenate([np.asarray(f) for f in fscores.values()]) if fscores else np.zeros(0)
    threshold = float(overall["fscore_threshold"])
    paths["fscore_curve"] = plots.plot_fscore_curves(
        {name: pooled}, out / "fscore_curve.png", per_image={name: list(fscores.values())}, headline=threshold,
        title=f"{name}: objects at each F-score threshold ({len(images)} images)")
    paths["boxplot"] = plots.plot_group_boxplot(
        {group: [images[n]["percent_f_above"] for n in summary["images"]] for group, summary in groups.items()},
        out / "boxplot.png", ylabel=f"% of objects with F-score ≥ {threshold:g} (per image)",
        title=f"{name}: % of objects with F ≥ {threshold:g}, per image")
    paths["ap_iou"] = plots.plot_ap_iou({name: overall["iou_sweep"]}, out / "ap_iou.png",
                                        title=f"{name}: AP and F1 against the IoU threshold")
    return paths


def evaluate_folders(
    truth_dir: str | Path,
    pred_dir: str | Path,
    out_dir: str | Path,
    group_by: GroupBy = None,
    fscore_threshold: float = 0.6,
    iou_thresholds: Iterable[float] = IOU_THRESHOLDS,
    iou_threshold: float = 0.5,
    name: str = "prediction",
    progress: bool = False,
) -> dict[str, Any]:
    """``stainseg evaluate --truth DIR --pred DIR -o OUT``: score every prediction against its ground truth.

    Files are paired by name without suffix (ground truth may be BBBC039-style colour PNG masks or
    TIFF labels; predictions TIFF, or the ``<name>.ome.zarr`` label images that ``segment`` writes
    for huge images, read whole from their full-resolution level). A folder that only holds
    ``labels/`` (the output of ``segment`` or ``groundtruth``) is entered. Writes ``OUT/metrics.json`` (overall, per group, per image,
    unpaired files), ``OUT/per_object.csv`` and ``fscore_curve.png``, ``boxplot.png``, ``ap_iou.png``.

    Returns
    -------
    dict
        As :func:`evaluate_arrays`, plus ``unpaired`` and ``outputs`` (the written paths).

    Raises
    ------
    StainsegError
        Missing or empty folders, no matching names, unreadable files, or a shape mismatch (one line
        naming both files).
    """
    pairs, unpaired = pair_label_files(truth_dir, pred_dir)

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        from tqdm import tqdm

        for stem, (truth_path, pred_path) in tqdm(pairs.items(), desc="evaluate", unit="image", disable=not progress):
            truth, pred = read_labels(truth_path), read_labels(pred_path)
            _check_pair(stem, truth, pred, truth_path, pred_path)
            yield stem, truth, pred

    result = _evaluate_items(items(), group_by, fscore_threshold, iou_thresholds, iou_threshold)
    result["unpaired"] = unpaired
    extra = {"truth_dir": str(truth_dir), "pred_dir": str(pred_dir), "unpaired": unpaired}
    result["outputs"] = write_evaluation(result, out_dir, name=name, extra=extra)
    return result


def _json_ready(value: Any) -> Any:
    """Plain JSON values: NaN / inf become null, numpy values become Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
