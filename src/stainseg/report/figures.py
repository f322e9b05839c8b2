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


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _zoom(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge by an integer factor, pixel for pixel (no smoothing: every image pixel stays visible)."""
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def outline_view(image: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None,
                 colour: Sequence[float] = (1.0, 0.85, 0.0), reference_colour: Sequence[float] = (0.0, 0.8, 1.0)) -> np.ndarray:
    """RGB float picture of a grey image with the outlines of ``labels`` (and, beneath them, of ``reference``).

    Example
    -------
    >>> lab = np.zeros((32, 32), int); lab[8:20, 8:20] = 1
    >>> outline_view(np.random.default_rng(0).random((32, 32)), lab)[8, 10].tolist()
    [1.0, 0.85, 0.0]
    """
    rgb = np.repeat(stretch(image)[..., None], 3, axis=-1)
    if reference is not None:
        rgb[find_boundaries(reference, mode="inner")] = reference_colour
    rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def busiest_windows(labels: np.ndarray, side: int, n: int) -> list[tuple[int, int]]:
    """Top-left corners of up to ``n`` non-overlapping ``side`` x ``side`` windows holding the most objects.

    Example
    -------
    >>> lab = np.zeros((200, 200), int); lab[150:160, 150:160] = 1; lab[170:180, 150:160] = 2
    >>> busiest_windows(lab, 64, 1)
    [(136, 122)]
    """
    from scipy import ndimage as ndi

    h, w = labels.shape
    side_y, side_x = min(side, h), min(side, w)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    centres = np.array(ndi.center_of_mass(labels > 0, labels, ids)).reshape(-1, 2) if len(ids) else np.zeros((0, 2))
    # windows centred on each object (clipped to the image), and a coarse grid for images without objects
    corners = {(int(np.clip(cy - side_y / 2, 0, h - side_y)), int(np.clip(cx - side_x / 2, 0, w - side_x))) for cy, cx in centres}
    corners |= {(y, x) for y in range(0, h - side_y + 1, max(8, side_y // 2)) for x in range(0, w - side_x + 1, max(8, side_x // 2))}
    candidates = []
    for y, x in corners:
        inside = (centres[:, 0] >= y) & (centres[:, 0] < y + side_y) & (centres[:, 1] >= x) & (centres[:, 1] < x + side_x)
        spread = float(np.abs(centres[inside] - (y + side_y / 2, x + side_x / 2)).sum()) if inside.any() else 0.0
        candidates.append((-int(inside.sum()), spread, y, x))  # most objects, then best centred
    chosen: list[tuple[int, int]] = []
    for _, _, y, x in sorted(candidates):
        if all(abs(y - cy) >= side_y or abs(x - cx) >= side_x for cy, cx in chosen):
            chosen.append((y, x))
        if len(chosen) == n:
            break
    return chosen


def result_views(image: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None, n_crops: int = 3,
                 crop: int = 128, zoom: int = 2, max_side: int = 1000) -> tuple[bytes, list[tuple[bytes, tuple[int, int]]]]:
    """The report's lead figure: a whole view with numbered crop boxes, and the crops enlarged pixel for pixel.

    The whole view is shown at full resolution (enlarged ``zoom`` x when it fits in ``max_side``,
    shrunk only when the image is larger); each crop of ``crop`` px is enlarged ``zoom`` x without
    smoothing, so single cells and their outlines can be judged.

    Returns
    -------
    whole : bytes
        PNG of the whole view.
    crops : list of (bytes, (y, x))
        PNG of each crop and its top-left corner in the image.
    """
    from PIL import Image, ImageDraw

    rgb = outline_view(image, labels, reference)
    corners = busiest_windows(labels if reference is None else np.maximum(labels, reference), crop, n_crops)
    crops = [(_png(_zoom(rgb[y:y + crop, x:x + crop], zoom)), (y, x)) for y, x in corners]
    h, w = labels.shape
    factor = max([f for f in range(1, zoom + 1) if max(h, w) * f <= max_side] or [1])  # as large as fits
    pic = Image.fromarray((np.clip(_zoom(rgb, factor), 0, 1) * 255).astype(np.uint8))
    scale = float(factor)
    if max(pic.size) > max_side:
        shrink = max_side / max(pic.size)
        pic = pic.resize((round(pic.size[0] * shrink), round(pic.size[1] * shrink)), Image.Resampling.LANCZOS)
        scale *= shrink
    draw = ImageDraw.Draw(pic)
    for i, (y, x) in enumerate(corners, 1):
        box = [x * scale, y * scale, (x + min(crop, w)) * scale - 1, (y + min(crop, h)) * scale - 1]
        draw.rectangle(box, outline=(255, 64, 255), width=2)
        draw.text((box[0] + 4, box[1] + 3), str(i), fill=(255, 64, 255))
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), crops


def thumbnail(image: np.ndarray, labels: np.ndarray, side: int = 160) -> bytes:
    """A small PNG of the input with outlines (for lists of images, e.g. the flagged ones)."""
    from PIL import Image

    pic = Image.fromarray((outline_view(image, labels) * 255).astype(np.uint8))
    scale = side / max(pic.size)
    pic = pic.resize((max(1, round(pic.size[0] * scale)), max(1, round(pic.size[1] * scale))),
                     Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pic.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
