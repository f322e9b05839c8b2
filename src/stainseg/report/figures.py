"""Pictures for the report: overlays, the tracked time-lapse animation, counts over time (matplotlib / PIL)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from stainseg.io.atomic import atomic_path


def stretch(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """Grey values to [0, 1] by percentiles, for display."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def outline_rgb(image: np.ndarray, labels: np.ndarray, colour: Sequence[float] = (1.0, 0.85, 0.0)) -> np.ndarray:
    """RGB picture of a grey image with the label outlines drawn in ``colour``."""
    grey = stretch(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    rgb[edges] = colour
    return rgb


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def overlay_panel(items: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> bytes:
    """A row of (caption, image, labels) overlays as PNG bytes."""
    n = max(1, len(items))
    fig = Figure(figsize=(4 * n, 4.3))
    for i, (caption, image, labels) in enumerate(items):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(outline_rgb(image, labels), interpolation="nearest")
        ax.set_title(f"{caption}\n{int(np.count_nonzero(np.unique(labels)))} objects", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return png_bytes(fig)


def counts_over_time(series: dict[str, tuple[list[float], list[int]]]) -> bytes:
    """Line plot of cell counts against time, one line per well (summed over its sites)."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for name, (times, counts) in sorted(series.items()):
        ax.plot(times, counts, marker="o", label=name)
    ax.set_xlabel("time point")
    ax.set_ylabel("segmented cells")
    ax.set_title("Cell counts over time")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(title="well", fontsize=8)
    return png_bytes(fig)


def track_animation(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], track_ids: Sequence[dict[int, str]],
                    path: str | Path | None = None, max_side: int = 384, ms_per_frame: int = 600) -> bytes:
    """Animated GIF of a segmented time-lapse: outlines coloured per track, track ids at the centroids.

    ``track_ids[t]`` maps each label of frame t to its track id. Returns the GIF bytes (and writes
    them atomically to ``path`` when given).
    """
    from PIL import Image, ImageDraw

    from stainseg.tracking import centroids

    palette = np.array(matplotlib.colormaps["tab20"].colors)
    pictures = []
    for t, (image, lab, ids) in enumerate(zip(frames, labels, track_ids)):
        rgb = np.repeat(stretch(image)[..., None], 3, axis=-1)
        edges = find_boundaries(lab, mode="inner")
        colour_of = np.zeros((int(lab.max()) + 1, 3))
        for label, tid in ids.items():
            colour_of[label] = palette[zlib.crc32(str(tid).encode()) % len(palette)]
        rgb[edges] = colour_of[lab[edges]]
        pic = Image.fromarray((rgb * 255).astype(np.uint8))
        scale = min(1.0, max_side / max(pic.size))
        if scale < 1.0:
            pic = pic.resize((int(pic.size[0] * scale), int(pic.size[1] * scale)), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(pic)
        label_ids, cents = centroids(lab)
        for label, (y, x) in zip(label_ids, cents):
            text = str(ids.get(int(label), "")).split(":")[-1]
            draw.text((x * scale - 4, y * scale - 5), text, fill=(255, 255, 255))
        draw.text((4, 4), f"t = {t}", fill=(255, 255, 0))
        pictures.append(pic.convert("P", palette=Image.Palette.ADAPTIVE))
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0)
    data = buf.getvalue()
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data
