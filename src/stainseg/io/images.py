"""Read and write microscopy images: TIFF (multi-page, OME), PNG, zarr. Label images atomically.

Images are returned with their original dtype; conversion is always explicit (:func:`as_float`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from stainseg.errors import StainsegError
from stainseg.io.atomic import atomic_path

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES + (".zarr",)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def _sniff(path: Path) -> str:
    """Return 'tiff', 'png', 'jpeg' or 'zarr' from the file's first bytes (not its name)."""
    if path.is_dir():
        if (path / ".zarray").exists() or (path / ".zgroup").exists() or (path / "zarr.json").exists():
            return "zarr"
        raise StainsegError("is a folder, not an image or zarr array; give the image file itself", path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise StainsegError("file is empty (0 bytes); re-export or remove it", path)
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    raise StainsegError("not a TIFF, PNG or JPEG image (unknown file signature); re-export it as TIFF", path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array with its original dtype.

    Parameters
    ----------
    path : str or Path
        A TIFF (single or multi-page, OME-TIFF), PNG/JPEG, or a zarr array folder.

    Returns
    -------
    ndarray
        2-D for a single plane; pages/channels stacked on the first axis(es) as stored.
        RGB(A) PNGs keep their last colour axis.

    Raises
    ------
    StainsegError
        Missing, empty, corrupt or unsupported files, with the path and a fix.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> path = write_image(tempfile.mkdtemp() + "/stack.tif", np.zeros((3, 32, 48), np.uint16))
    >>> image = read_image(path)
    >>> image.shape, image.dtype.name
    ((3, 32, 48), 'uint16')
    """
    path = Path(path)
    if not path.exists():
        raise StainsegError("file not found; check the path (and the experiment's root)", path)
    kind = _sniff(path)
    try:
        with _quiet_readers():
            data = _read(path, kind)
    except StainsegError:
        raise
    except MemoryError:
        raise StainsegError("image is too large to read into memory; convert it to zarr and segment block-wise", path) from None
    except Exception as exc:  # corrupt or truncated files raise many kinds of errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StainsegError(f"cannot read {kind.upper()} ({reason}); the file is corrupt or truncated, re-export it", path) from None
    if data.size == 0:
        raise StainsegError("image has no pixels (zero size); re-export it", path)
    if data.dtype == object:
        raise StainsegError(f"unsupported pixel type {data.dtype}; save as 8/16-bit integer or float TIFF", path)
    return data


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """Keep tifffile's log lines and the readers' warnings about odd files off the user's terminal.

    What is wrong with a file is reported once, as the one-line :class:`StainsegError`.
    """
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _read(path: Path, kind: str) -> np.ndarray:
    """The array of one file whose kind is known (may raise anything on a corrupt file)."""
    if kind == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.pages or len(tif.pages) == 0:
                raise ValueError("no pages")
            return tif.asarray()
    if kind == "zarr":
        import zarr

        return np.asarray(zarr.open(str(path), mode="r"))
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return np.asarray(im)


def check_not_mask(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Refuse a binary (bool) array where a microscope image is expected; return ``image`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> check_not_mask(np.zeros((4, 4), bool), "mask.tif")
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: mask.tif: is a binary (bool) mask, not a microscope image; give the raw microscope image
    """
    if image.dtype == bool:
        raise StainsegError("is a binary (bool) mask, not a microscope image; give the raw microscope image", path)
    return image


def read_plane(path: str | Path) -> np.ndarray:
    """Read a file that must hold exactly one 2-D grayscale plane (RGB with equal channels is accepted).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> path = write_image(tempfile.mkdtemp() + "/dna.tif", np.ones((1, 32, 48), np.uint16))
    >>> read_plane(path).shape                      # a single page is squeezed to 2-D
    (32, 48)
    """
    data = check_not_mask(read_image(path), path)
    data = np.squeeze(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        rgb = data[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            data = rgb[..., 0]
        else:
            raise StainsegError("is a colour (RGB) image but a grayscale channel is expected; save each channel as its own grayscale file", path)
    if data.ndim != 2:
        raise StainsegError(f"expected one 2-D plane but the file holds shape {data.shape}; split the stack into one file per plane or list it as a channel stack", path)
    if min(data.shape) < 2:
        raise StainsegError(f"image is only {data.shape[0]} x {data.shape[1]} pixels; it is too small to segment", path)
    return data


def as_float(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Convert to float32 without rescaling; bool becomes 0/1. NaN or inf pixels are an error.

    Examples
    --------
    >>> import numpy as np
    >>> as_float(np.array([[0, 4095]], np.uint16))  # no rescaling
    array([[   0., 4095.]], dtype=float32)
    """
    if image.dtype == bool:
        return image.astype(np.float32)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise StainsegError(f"unsupported pixel type {image.dtype}; save as integer or float", path)
    out = image.astype(np.float32, copy=False)
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise StainsegError(f"image has {bad} NaN or infinite pixels; fix or mask them before segmenting", path)
    return out


def label_dtype(max_label: int) -> np.dtype:
    """uint16 while labels fit, uint32 beyond 65535 objects.

    Examples
    --------
    >>> label_dtype(300).name, label_dtype(70000).name
    ('uint16', 'uint32')
    """
    if max_label <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if max_label <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise StainsegError(f"{max_label} labels do not fit in uint32")


def write_labels(path: str | Path, labels: np.ndarray, metadata: dict[str, Any] | None = None) -> Path:
    """Write an instance label image (0 = background) as a zlib-compressed TIFF, atomically.

    The dtype is uint16, or uint32 when there are more than 65535 labels.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> labels = np.zeros((32, 32), np.int64); labels[4:10, 4:10] = 1
    >>> path = write_labels(tempfile.mkdtemp() + "/labels.tif", labels)
    >>> read_labels(path).dtype.name, int(read_labels(path).max())
    ('uint16', 1)
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise StainsegError(f"label image must be 2-D, got shape {labels.shape}", path)
    if labels.size and labels.min() < 0:
        raise StainsegError("label image has negative values", path)
    max_label = int(labels.max()) if labels.size else 0
    data = labels.astype(label_dtype(max_label), copy=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", metadata=metadata or {}, photometric="minisblack")
    return path


def write_image(path: str | Path, image: np.ndarray, compress: bool = True) -> Path:
    """Write any array (e.g. a float32 probability map or a stack) as TIFF, atomically.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> path = write_image(tempfile.mkdtemp() + "/prob.tif", np.full((8, 8), 0.25, np.float32))
    >>> float(read_image(path)[0, 0])
    0.25
    """
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(image), compression="zlib" if compress else None, photometric="minisblack")
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance label image; PNG masks with colour-coded touching objects are split by colour.

    Integer labels are returned as int64-free unsigned arrays (uint16/uint32 as stored). An RGB(A)
    mask (as in BBBC039) is converted so that each connected component of one colour is one object.
    An OME-Zarr label image (``labels/<name>.ome.zarr`` of a block-wise ``stainseg segment``) is read
    whole from its full-resolution level (:func:`stainseg.io.omezarr.read_label_image`).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> labels = np.zeros((16, 16), np.uint32); labels[2:6, 2:6] = 7
    >>> back = read_labels(write_image(tempfile.mkdtemp() + "/l.tif", labels))
    >>> back.dtype.name, np.unique(back).tolist()
    ('uint16', [0, 7])
    """
    if is_ome_zarr(path):
        from stainseg.io.omezarr import read_label_image

        data = read_label_image(path)
    else:
        data = read_image(path)
    data = np.squeeze(data)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        return labels_from_colour_mask(data[..., 0])
    if data.ndim != 2:
        raise StainsegError(f"label image must be 2-D, got shape {data.shape}", path)
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise StainsegError("label image holds non-integer values; it must be an integer instance mask", path)
    if data.min() < 0:
        raise StainsegError("label image has negative values; it must be 0 (background) or a positive label", path)
    return data.astype(label_dtype(int(data.max())), copy=False)


def is_ome_zarr(path: str | Path) -> bool:
    """True for an OME-Zarr store by its name (``*.ome.zarr``), present or not.

    Examples
    --------
    >>> is_ome_zarr("OUT/labels/big.ome.zarr"), is_ome_zarr("OUT/labels/a.tif"), is_ome_zarr("plain.zarr")
    (True, False, False)
    """
    return Path(path).name.lower().endswith(".ome.zarr")


def labels_from_colour_mask(colours: np.ndarray) -> np.ndarray:
    """Turn a mask whose values are colour classes (touching objects differ) into instance labels.

    Each connected component (8-connectivity) of one non-zero value becomes one object.

    Examples
    --------
    >>> import numpy as np
    >>> colours = np.array([[1, 1, 2, 0, 1],
    ...                     [1, 1, 2, 0, 1]])      # two touching objects of different colour, one apart
    >>> labels_from_colour_mask(colours)
    array([[1, 1, 3, 0, 2],
           [1, 1, 3, 0, 2]], dtype=uint16)
    """
    from scipy import ndimage as ndi

    out = np.zeros(colours.shape, dtype=np.int64)
    next_label = 0
    for value in np.unique(colours):
        if value == 0:
            continue
        comp, n = ndi.label(colours == value, structure=np.ones((3, 3), bool))
        out[comp > 0] = comp[comp > 0] + next_label
        next_label += n
    return out.astype(label_dtype(next_label), copy=False)
