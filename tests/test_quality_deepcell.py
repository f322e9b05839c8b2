"""Quality flags of a HeLa phase-contrast reference on real fields of other kinds (deepcell).

A model trained on HeLa fields meets, on a real plate, other cell types and the same cells imaged on
another day. The checks must flag what would mislead the model and leave alone what it can segment:

* 3T3 at the same magnification: phase texture and nucleus sizes within the HeLa range, so not
  flagged (the figures of the HeLa model on 3T3 manual nuclei are in docs/results.md);
* BMDM macrophages: nuclei four times smaller than HeLa's, flagged ``object_size``;
* the HeLa plating-density series (``HeLa_s7``, other exposure settings, sparse): flagged
  ``too_few_objects`` (about a tenth of the training density), not blank and not out of focus.
"""

from __future__ import annotations

import numpy as np
import pytest

import stainseg
from stainseg.quality import check_image, check_objects, reference_statistics

pytestmark = pytest.mark.data


def _tif(path):
    import tifffile

    return tifffile.imread(path)


@pytest.fixture(scope="module")
def deepcell(shared_data):
    d = shared_data / "deepcell" / "images"
    if not d.exists():
        pytest.skip(f"real data {d} is absent")
    return d


def _nuclei(path) -> np.ndarray:
    return np.asarray(stainseg.automatic_labels(nuclei=_tif(path)))


@pytest.fixture(scope="module")
def hela_reference(deepcell):
    """Phase statistics and automatic-nucleus statistics of HeLa fields 2-5 (the training set of a HeLa model)."""
    sites = (2, 3, 4, 5)
    phases = [_tif(deepcell / f"HeLa_s{k}_phase.tif")[None] for k in sites]
    labels = [_nuclei(deepcell / f"HeLa_s{k}_nuclear.tif") for k in sites]
    return reference_statistics(phases, labels)


def _flags(deepcell, ref, name: str) -> tuple[set[str], set[str], list[str]]:
    image = {f.code for f in check_image(_tif(deepcell / f"{name}_phase.tif")[None], ref)}
    found = check_objects(_nuclei(deepcell / f"{name}_nuclear.tif"), ref)
    return image, {f.code for f in found}, [f.reason for f in found]


def test_other_cell_type_same_magnification_is_not_flagged(deepcell, hela_reference):
    for name in ("HeLa_s6", "3T3_s1", "3T3_s2"):
        image, objects, _ = _flags(deepcell, hela_reference, name)
        assert image <= {"dim", "bright"} and not objects, (name, image, objects)


def test_smaller_nuclei_of_another_cell_type_are_flagged(deepcell, hela_reference):
    image, objects, reasons = _flags(deepcell, hela_reference, "BMDM_s1")
    assert "object_size" in objects, reasons
    assert "blank" not in image and "out_of_focus" not in image


def test_plating_series_is_flagged_sparse_not_blank(deepcell, hela_reference):
    image, objects, reasons = _flags(deepcell, hela_reference, "HeLa_s7")
    assert objects == {"too_few_objects"}, reasons
    assert "per megapixel" in reasons[0]
    assert not image & {"blank", "low_signal", "out_of_focus", "saturated"}, image
