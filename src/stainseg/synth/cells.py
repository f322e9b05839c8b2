"""Draw a simulated cell population: label images and the per-pixel maps the renderers need.

:func:`render_cells` turns a :class:`~stainseg.synth.population.Population` into cell and nucleus
labels, the depth inside each cell and nucleus, and the textures the cells carry
(:func:`make_textures`). The population itself (:class:`CellParams`, :func:`seed_population`,
:func:`step_population`) lives in :mod:`stainseg.synth.population` and is importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from stainseg.synth.population import (
    MODES,
    TEXTURE_MARGIN,
    TEXTURE_SIZE,
    CellParams,
    Population,
    seed_population,
    step_population,
)

__all__ = [
    "MODES",
    "TEXTURE_MARGIN",
    "TEXTURE_SIZE",
    "CellFields",
    "CellParams",
    "Population",
    "make_textures",
    "render_cells",
    "seed_population",
    "step_population",
]


@dataclass
class CellFields:
    """Per-pixel output of :func:`render_cells` for one frame.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> fields.labels.shape, bool(np.isin(fields.nuclei, fields.labels).all())   # every nucleus inside its cell
    ((96, 96), True)
    """

    labels: np.ndarray
    """Cell instance labels (0 = background), 1..n in track order."""
    nuclei: np.ndarray
    """Nucleus labels, equal to the label of the cell that holds the nucleus."""
    depth: np.ndarray
    """0 at the cell outline rising to 1 at its centre (float32)."""
    nuc_depth: np.ndarray
    """Same inside the nucleus, 0 elsewhere."""
    low: np.ndarray
    """Smooth texture of the cell body (moves with the cell)."""
    grain: np.ndarray
    """Fine granular texture of the cell body (moves with the cell)."""
    chromatin: np.ndarray
    """Fine texture of the nucleus."""
    tracks: np.ndarray
    """Track id of each label (index 0 = background, 0)."""
    index: np.ndarray
    """Row in the population of each label (index 0 = background, -1)."""


def make_textures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static texture maps (zero mean, unit sd) that cells sample at their own origin.

    Examples
    --------
    >>> import numpy as np
    >>> textures = make_textures(np.random.default_rng(0))
    >>> sorted(textures), round(float(textures["low"].std()), 3)
    (['chromatin', 'grain', 'low'], 1.0)
    """
    side = TEXTURE_SIZE + 2 * TEXTURE_MARGIN
    out = {}
    for name, sigma in (("low", 5.0), ("grain", 0.9), ("chromatin", 1.1)):
        tex = ndi.gaussian_filter(rng.normal(0.0, 1.0, (side, side)), sigma, mode="wrap")
        out[name] = ((tex - tex.mean()) / tex.std()).astype(np.float32)
    return out


def render_cells(pop: Population, size: int, textures: dict[str, np.ndarray], min_area: int = 15) -> CellFields:
    """Draw the population on a ``size`` x ``size`` field.

    Each pixel goes to the cell in which it lies deepest (relative to that cell's outline), so that
    overlapping neighbours share a straight-ish border, as touching cells do. Fragments of a cell cut
    off by a neighbour and visible pieces smaller than ``min_area`` px are dropped.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> n = int(fields.labels.max())
    >>> bool(n > 3), np.unique(fields.labels).tolist() == list(range(n + 1))   # labels 1..n
    (True, True)
    """
    shape = (size, size)
    owner = np.full(shape, -1, np.int32)
    depth = np.zeros(shape, np.float32)
    nuc_depth = np.zeros(shape, np.float32)
    tex = {k: np.zeros(shape, np.float32) for k in textures}
    mitotic = pop.mitosis > 0
    radius = np.where(mitotic, 0.8 * pop.radius, pop.radius)
    aspect = np.where(mitotic, 1.0, pop.aspect)
    modes = np.where(mitotic[:, None, None], 0.15 * pop.modes, pop.modes)
    boxes = []
    for i in range(len(pop)):
        a, b = radius[i] * np.sqrt(aspect[i]), radius[i] / np.sqrt(aspect[i])
        half = min(int(a * (1.0 + np.abs(modes[i]).sum())) + 2, TEXTURE_MARGIN - 1)
        cy, cx = int(round(pop.y[i])), int(round(pop.x[i]))
        y0, y1, x0, x1 = max(cy - half, 0), min(cy + half + 1, size), max(cx - half, 0), min(cx + half + 1, size)
        if y0 >= y1 or x0 >= x1:
            boxes.append(None)
            continue
        dy = (np.arange(y0, y1) - pop.y[i])[:, None]
        dx = (np.arange(x0, x1) - pop.x[i])[None, :]
        ca, sa = np.cos(pop.angle[i]), np.sin(pop.angle[i])
        xr, yr = dx * ca + dy * sa, dy * ca - dx * sa
        xa, yb = xr / a, yr / b
        rho = np.sqrt(xa * xa + yb * yb)
        unit = (xa + 1j * yb) / np.maximum(rho, 1e-9)  # e^{i theta}
        power = unit * unit  # e^{2 i theta}
        wiggle = np.zeros_like(rho)
        for k in range(MODES):  # sum_k c_k cos(k theta) + s_k sin(k theta)
            wiggle += modes[i, k, 0] * power.real + modes[i, k, 1] * power.imag
            power = power * unit
        u = (1.0 - rho / (1.0 + wiggle)).astype(np.float32)
        win = u > depth[y0:y1, x0:x1]
        if not win.any():
            boxes.append(None)
            continue
        # nucleus: an ellipse offset from the centre, in the cell's frame
        shrink = 0.85 if mitotic[i] else 1.0
        na = pop.nuc_scale[i] * radius[i] * np.sqrt(pop.nuc_aspect[i]) * shrink
        nb = pop.nuc_scale[i] * radius[i] / np.sqrt(pop.nuc_aspect[i]) * shrink
        nx, ny = xr - pop.nuc_dx[i] * a * 0.6, yr - pop.nuc_dy[i] * b * 0.6
        cn, sn = np.cos(pop.nuc_angle[i]), np.sin(pop.nuc_angle[i])
        un = np.clip(1.0 - np.hypot((nx * cn + ny * sn) / na, (ny * cn - nx * sn) / nb), 0.0, None)
        np.copyto(depth[y0:y1, x0:x1], u, where=win)
        np.copyto(nuc_depth[y0:y1, x0:x1], un, where=win, casting="unsafe")
        np.copyto(owner[y0:y1, x0:x1], i, where=win, casting="unsafe")
        ty, tx = pop.tex_y[i] - cy, pop.tex_x[i] - cx
        for k, t in textures.items():
            np.copyto(tex[k][y0:y1, x0:x1], t[y0 + ty:y1 + ty, x0 + tx:x1 + tx], where=win)
        boxes.append((y0, y1, x0, x1))
    # keep the largest connected piece of every cell; drop slivers
    for i, box in enumerate(boxes):
        if box is None:
            continue
        y0, y1, x0, x1 = box
        sub = owner[y0:y1, x0:x1]
        mine = sub == i
        comp, n = ndi.label(mine)
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            mine = comp == 1 + int(np.argmax(sizes))
            sub[(sub == i) & ~mine] = -1
        if np.count_nonzero(mine) < min_area:
            sub[mine] = -1
    background = owner < 0
    depth[background] = 0.0
    nuc_depth[background] = 0.0
    for t in tex.values():
        t[background] = 0.0
    present = np.unique(owner[~background])  # rows, sorted; tracks grow with rows except daughters
    order = present[np.argsort(pop.track[present], kind="stable")]
    lut = np.zeros(len(pop) + 1, np.int64)
    lut[order + 1] = np.arange(1, len(order) + 1)
    labels = lut[owner + 1].astype(np.int32)
    nuclei = np.where(nuc_depth > 0, labels, 0).astype(np.int32)
    return CellFields(
        labels=labels, nuclei=nuclei, depth=depth, nuc_depth=nuc_depth,
        low=tex["low"], grain=tex["grain"], chromatin=tex["chromatin"],
        tracks=np.concatenate([[0], pop.track[order]]),
        index=np.concatenate([[-1], order]),
    )
