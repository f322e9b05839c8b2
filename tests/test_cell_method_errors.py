"""The one-line errors of cells grown from nuclei (``cell_method``) through the real command line (docs/errors.md):
exit 2, one line naming the file and the fix, no model written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from _templates import write_cells_experiment
from stainseg.cli import main


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def _experiment(tmp_path: Path, extra: str = "", cytoplasm: str = "") -> Path:
    from stainseg.data import isl_sample

    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    sample = isl_sample(planes=[6])
    part = np.s_[:192, :192]  # a corner of the bundled crop with several nuclei
    tifffile.imwrite(images / "s1_phase.tif", sample["phase"][0][part])
    tifffile.imwrite(images / "s1_dapi.tif", sample["dapi"][part])
    return write_cells_experiment(tmp_path, extra, cytoplasm, train="iterations = 1\ncrop_size = 64")


@pytest.mark.parametrize("extra, cytoplasm, message", [
    ('cell_method = "texture"', "", "key 'cell_method' must be 'auto' or 'network' or 'nuclei', got 'texture'"),
    ('cell_method = "nuclei"', 'cytoplasm = "ct"',
     "key 'cell_method' = \"nuclei\" grows cells over the label-free texture and cannot use channels.cytoplasm; "
     "use \"network\" (or \"auto\") with a cytoplasm stain, or remove channels.cytoplasm"),
])
def test_bad_cell_method(capsys, tmp_path: Path, extra: str, cytoplasm: str, message: str) -> None:
    exp = _experiment(tmp_path, extra, cytoplasm)
    rc, err = _run(capsys, "train", exp, "-o", tmp_path / "MODEL")
    assert rc == 2 and err == f"stainseg: error: {exp.resolve()}: {message}"
    assert not (tmp_path / "MODEL" / "model.pt").exists()


def test_ground_truth_without_its_nuclei(capsys, tmp_path: Path) -> None:
    """A ground-truth folder whose nuclei/<set>.tif is missing (made before stainseg kept them) or of another size."""
    exp = _experiment(tmp_path)
    gt = tmp_path / "GT"
    assert _run(capsys, "groundtruth", exp, "-o", gt)[0] == 0
    nuclei = gt / "nuclei" / "ss1.tif"  # an image set is named by its fields
    assert nuclei.is_file() and tifffile.imread(gt / "labels" / "ss1.tif").any()
    kept = tifffile.imread(nuclei)

    nuclei.unlink()
    rc, err = _run(capsys, "train", exp, "-o", tmp_path / "MODEL", "--labels", gt)
    assert rc == 2 and "\n" not in err
    assert err == (f"stainseg: error: {nuclei.resolve()}: is missing: cell_method \"nuclei\" trains on the nuclei of the "
                   "automatic cell labels; re-run 'stainseg groundtruth' (this version keeps them) or set cell_method = \"network\"")

    tifffile.imwrite(nuclei, kept[:100])
    rc, err = _run(capsys, "train", exp, "-o", tmp_path / "MODEL", "--labels", gt)
    assert rc == 2 and err == (f"stainseg: error: {nuclei.resolve()}: nuclei labels (100, 192) differ in size from the cell "
                               "labels (192, 192) of the same image set; re-run 'stainseg groundtruth'")
    assert not (tmp_path / "MODEL" / "model.pt").exists()
