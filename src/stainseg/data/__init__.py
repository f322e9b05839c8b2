"""Sample data shipped with stainseg: a small crop of a real phase-contrast z-stack with its DAPI stain.

``isl/`` holds 384 x 512 px of one field of the In Silico Labeling data (Christiansen et al.,
Cell 2018; google/in-silico-labeling, Apache License 2.0: the licence text and the attribution
are in ``isl/LICENSE`` and ``isl/NOTICE``): five phase-contrast focal planes and the DAPI image
of the same field, uint16, unchanged except for the crop.

Examples
--------
>>> sample = isl_sample()
>>> sample["phase"].shape, sample["dapi"].shape
((5, 384, 512), (384, 512))
>>> sample["planes"]
[2, 4, 6, 8, 10]
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from stainseg.errors import StainsegError

__all__ = ["isl_folder", "isl_sample", "ISL_PLANES"]

#: The focal planes (indices into the source's 13-plane stack) bundled in ``isl/``.
ISL_PLANES: tuple[int, ...] = (2, 4, 6, 8, 10)


def isl_folder() -> Path:
    """The folder of the bundled ``isl`` crop (inside the installed package)."""
    return Path(str(resources.files("stainseg") / "data" / "isl"))


def isl_sample(planes: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """The bundled real phase-contrast z-stack crop and its DAPI image as arrays.

    Parameters
    ----------
    planes : sequence of int, optional
        Focal planes to load (of :data:`ISL_PLANES`; default all of them).

    Returns
    -------
    dict
        ``phase`` (P, 384, 512) uint16, ``dapi`` (384, 512) uint16, ``planes`` (list of int),
        ``folder`` (Path), ``citation`` (str).
    """
    import tifffile

    folder = isl_folder()
    chosen = list(ISL_PLANES if planes is None else planes)
    missing = [z for z in chosen if z not in ISL_PLANES]
    if missing:
        raise StainsegError(f"focal planes {missing} are not bundled; choose from {list(ISL_PLANES)}", folder)
    files = [folder / f"isl_s1_phase_z{z:02d}.tif" for z in chosen] + [folder / "isl_s1_dapi.tif"]
    absent = [p.name for p in files if not p.exists()]
    if absent:
        raise StainsegError(f"bundled sample files {absent} are missing; reinstall stainseg", folder)
    phase = np.stack([tifffile.imread(p) for p in files[:-1]])
    return {"phase": phase, "dapi": tifffile.imread(files[-1]), "planes": chosen, "folder": folder,
            "citation": "Christiansen et al., In Silico Labeling: Predicting Fluorescent Labels in Unlabeled Images, "
                        "Cell 173(3):792-803 (2018); data from google/in-silico-labeling (Apache License 2.0)"}
