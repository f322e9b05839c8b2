"""Make the bundled ``isl`` crop from the source images (how ``stainseg/data/isl`` was made).

Usage: ``python -m stainseg.data.make_isl_crop SOURCE_IMAGES_FOLDER [OUT_FOLDER]`` where the source
folder holds ``isl_s1_phase_zNN.tif`` and ``isl_s1_dapi.tif`` (512 x 1024, the top half of the
field). Pixel values are copied unchanged; see ``isl/NOTICE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stainseg.data import ISL_PLANES, isl_folder
from stainseg.errors import StainsegError

ROWS = slice(0, 384)
COLUMNS = slice(448, 960)


def make_crop(source: Path, out: Path) -> list[Path]:
    """Write the crop of every bundled plane and the DAPI image from ``source`` into ``out``.

    Example
    -------
    >>> make_crop(Path("/data/isl/images"), Path("/tmp/isl"))  # doctest: +SKIP
    """
    import tifffile

    from stainseg.io.atomic import atomic_path

    names = [f"isl_s1_phase_z{z:02d}" for z in ISL_PLANES] + ["isl_s1_dapi"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = source / f"{name}.tif"
        if not path.exists():
            raise StainsegError("source image not found; give the folder of the isl images", path)
        crop = np.ascontiguousarray(tifffile.imread(path)[ROWS, COLUMNS])
        with atomic_path(out / f"{name}.tif") as tmp:
            tifffile.imwrite(tmp, crop, compression="zlib", predictor=True)
        written.append(out / f"{name}.tif")
    return written


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for p in make_crop(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else isl_folder()):
        print(p)
