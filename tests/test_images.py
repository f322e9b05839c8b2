"""Image I/O: round trips for every dtype, label writing, corrupt input, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stainseg.errors import StainsegError
from stainseg.io import atomic
from stainseg.io.images import (
    as_float,
    read_image,
    read_labels,
    read_plane,
    write_image,
    write_labels,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32, np.float64])
def test_tiff_round_trip_keeps_dtype(tmp_path: Path, dtype) -> None:
    rng = np.random.default_rng(0)
    img = (rng.random((37, 53)) * 200).astype(dtype)
    path = write_image(tmp_path / "a.tif", img)
    back = read_image(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, img)


def test_twelve_bit_values_in_uint16(tmp_path: Path) -> None:
    img = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    back = read_plane(write_image(tmp_path / "b.tif", img))
    assert back.max() == 4095 and back.dtype == np.uint16


def test_multipage_and_png(tmp_path: Path) -> None:
    from PIL import Image

    stack = np.random.default_rng(1).integers(0, 60000, (3, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    assert read_image(tmp_path / "s.tif").shape == (3, 20, 30)
    with pytest.raises(StainsegError, match="expected one 2-D plane"):
        read_plane(tmp_path / "s.tif")
    Image.fromarray(stack[0].astype(np.uint8)).save(tmp_path / "p.png")
    assert read_plane(tmp_path / "p.png").dtype == np.uint8


def test_ome_tiff(tmp_path: Path) -> None:
    stack = np.random.default_rng(2).integers(0, 60000, (2, 16, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.ome.tif", stack, ome=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "x.ome.tif"), stack)


def test_labels_dtype_and_compression(tmp_path: Path) -> None:
    small = np.zeros((50, 50), np.int64)
    small[10:20, 10:20] = 7
    back = read_labels(write_labels(tmp_path / "l.tif", small))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, small)
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.pages[0].compression.name in ("ADOBE_DEFLATE", "DEFLATE")
    big = np.arange(300 * 300, dtype=np.int64).reshape(300, 300)
    back = read_labels(write_labels(tmp_path / "big.tif", big))
    assert back.dtype == np.uint32 and back.max() == 300 * 300 - 1


def test_colour_mask_touching_objects_split(tmp_path: Path) -> None:
    from PIL import Image

    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[2:8, 2:8, 0] = 1
    rgba[2:8, 8:14, 0] = 2  # touches the first: different colour
    rgba[12:18, 12:18, 0] = 1  # same colour, separate component
    Image.fromarray(rgba).save(tmp_path / "m.png")
    labels = read_labels(tmp_path / "m.png")
    assert len(np.unique(labels)) == 4


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(StainsegError, match="file not found"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(StainsegError, match="empty"):
        read_image(tmp_path / "empty.tif")
    good = write_image(tmp_path / "g.tif", np.ones((64, 64), np.uint16), compress=False)
    (tmp_path / "trunc.tif").write_bytes(good.read_bytes()[:200])
    with pytest.raises(StainsegError, match="corrupt or truncated") as info:
        read_image(tmp_path / "trunc.tif")
    assert "trunc.tif" in str(info.value)
    (tmp_path / "text.tif").write_text("hello")
    with pytest.raises(StainsegError, match="not a TIFF"):
        read_image(tmp_path / "text.tif")


def test_as_float_rejects_nan() -> None:
    img = np.ones((4, 4), np.float32)
    img[1, 1] = np.nan
    with pytest.raises(StainsegError, match="NaN"):
        as_float(img, "x.tif")
    assert as_float(np.ones((2, 2), bool)).dtype == np.float32


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    write_labels(target, np.ones((8, 8), np.uint16))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_write_into_unwritable_folder(tmp_path: Path) -> None:
    import os

    (tmp_path / "afile").write_text("x")
    with pytest.raises(StainsegError, match="cannot create output folder"):
        write_labels(tmp_path / "afile" / "sub" / "x.tif", np.zeros((4, 4), np.uint16))

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(StainsegError, match="not writable"):
            write_labels(locked / "x.tif", np.zeros((4, 4), np.uint16))
    finally:
        locked.chmod(0o700)


def test_zarr_folder_is_read_as_an_image(tmp_path: Path) -> None:
    import zarr

    z = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=(100, 80), dtype=np.float32, chunks=(32, 32))
    z[10:20, 5:9] = 3.0
    back = read_image(tmp_path / "a.zarr")
    assert back.shape == (100, 80) and back.dtype == np.float32 and float(back[15, 6]) == 3.0 and back.sum() == 3.0 * 40


def test_real_bbbc039_mask(bbbc039: Path) -> None:
    mask = sorted((bbbc039 / "masks").glob("*.png"))[0]
    labels = read_labels(mask)
    image = read_plane(bbbc039 / "images" / (mask.stem + ".tif"))
    assert labels.shape == image.shape == (520, 696)
    assert image.dtype == np.uint16 and image.max() < 4096
    assert 30 < len(np.unique(labels)) - 1 < 400
