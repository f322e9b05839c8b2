"""Automatic ground truth from end-point stains (METHOD.md section 1); numpy in, numpy out, no torch."""

from stainseg.groundtruth.cells import enhance_cytoplasm, segment_cells
from stainseg.groundtruth.illumination import apply_field, background_field, correct_illumination, plate_illumination
from stainseg.groundtruth.nuclei import estimate_diameter, project_z, segment_nuclei
from stainseg.groundtruth.pipeline import correct_stain, groundtruth_for_set, preview_png
from stainseg.groundtruth.qc import qc_metrics, qc_table

__all__ = [
    "apply_field", "background_field", "correct_illumination", "correct_stain", "enhance_cytoplasm",
    "estimate_diameter", "groundtruth_for_set", "plate_illumination", "preview_png", "project_z",
    "qc_metrics", "qc_table", "segment_cells", "segment_nuclei",
]
