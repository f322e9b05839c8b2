"""Evaluation (METHOD.md section 6): the paper's per-object F-score and Cellpose/StarDist-style AP at IoU."""

from stainseg.evaluate.matching import (
    fscore_curve,
    match_iou,
    object_fscores,
    overlap_table,
    percent_above,
)
from stainseg.evaluate.batch import evaluate_arrays, image_groups
from stainseg.evaluate.summary import evaluate_pair, pooled_scores

__all__ = [
    "evaluate_arrays",
    "image_groups",
    "evaluate_pair",
    "fscore_curve",
    "match_iou",
    "object_fscores",
    "overlap_table",
    "percent_above",
    "pooled_scores",
]


from stainseg._callable import callable_package  # noqa: E402

callable_package(__name__, "evaluate")  # stainseg.evaluate(...) is the front-door function too
