"""A PNG that shows one site of a synthetic experiment at its end point: BF planes, stains, true labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stainseg.io.atomic import atomic_path
from stainseg.io.images import read_image, read_labels


def _stretch(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.8])
    return np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def label_colours(labels: np.ndarray, outlines: np.ndarray | None = None) -> np.ndarray:
    """RGB image of ``labels`` with a fixed random colour per label; ``outlines`` (bool) drawn white.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((8, 8), int); labels[2:6, 2:6] = 1
    >>> rgb = label_colours(labels)
    >>> rgb.shape, rgb[0, 0].tolist()                  # background black
    ((8, 8, 3), [0.0, 0.0, 0.0])
    """
    from skimage.segmentation import find_boundaries

    palette = np.random.default_rng(1).uniform(0.25, 1.0, (int(labels.max()) + 1, 3))
    palette[0] = 0.0
    rgb = palette[labels]
    rgb[find_boundaries(labels, mode="inner")] *= 0.5
    if outlines is not None:
        rgb[outlines] = 1.0
    return rgb


def write_preview(out_dir: str | Path, well: str, site: int, time: int, crop: int = 512) -> Path:
    """Write ``out_dir/preview.png`` for one image set of an experiment made by :func:`generate_experiment`.

    Images larger than ``crop`` px are shown by their central ``crop`` x ``crop`` part.

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.synth.experiment import generate_experiment
    >>> out = tempfile.mkdtemp()
    >>> _ = generate_experiment(out, wells=1, sites=1, times=1, size=64)
    >>> write_preview(out, "A01", site=1, time=0).name
    'preview.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    out = Path(out_dir)
    stem = f"{well}_s{site}_t{time:02d}"
    panels = [(f"BF z{z} ({(z - 1) * 4:+d} um)", read_image(out / "images" / f"{stem}_z{z}_BF.tif")) for z in range(3)]
    panels += [("Hoechst", read_image(out / "images" / f"{stem}_Hoechst.tif")),
               ("CellTracker", read_image(out / "images" / f"{stem}_CellTracker.tif"))]
    cells = read_labels(out / "truth" / "cells" / f"{stem}.tif")
    nuclei = read_labels(out / "truth" / "nuclei" / f"{stem}.tif")
    size = cells.shape[0]
    a = max((size - crop) // 2, 0)
    window = (slice(a, a + crop), slice(a, a + crop))
    truth = label_colours(cells[window], find_boundaries(nuclei[window], mode="inner"))
    fig, axes = plt.subplots(2, 3, figsize=(15, 10.4), dpi=100)
    axes = axes.ravel()
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(_stretch(image[window]), cmap="gray", interpolation="nearest")
        ax.set_title(title)
    axes[5].imshow(truth, interpolation="nearest")
    axes[5].set_title(f"true cells ({int(cells.max())}), nuclei outlined")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{stem} (end point){' - central crop' if size > crop else ''}")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = out / "preview.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
