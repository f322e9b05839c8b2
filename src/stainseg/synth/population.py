"""Simulated population of adherent cells: irregular ellipses that move, change shape and divide.

A :class:`Population` holds one numpy array per cell property (one entry per cell), so that motion
and repulsion are vectorised: :func:`seed_population` places the first cells, :func:`step_population`
advances them one frame. :mod:`stainseg.synth.cells` draws them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["MODES", "TEXTURE_SIZE", "TEXTURE_MARGIN", "CellParams", "Population", "seed_population", "step_population"]

MODES = 4
"""Fourier modes 2..5 perturb each cell outline."""
TEXTURE_SIZE = 256
"""Side of the static texture maps that cells sample (each cell at its own random origin)."""
TEXTURE_MARGIN = 64
"""Largest half-size of a cell's bounding box (px); the texture maps are padded by it."""


@dataclass
class CellParams:
    """Geometry and dynamics of the simulated cells (lengths in px, per frame).

    Examples
    --------
    >>> params = CellParams(density=0.5)           # half the default crowding
    >>> params.radius, params.density
    (17.0, 0.5)
    """

    radius: float = 17.0
    """Mean cell radius (cells are ~30-45 px across)."""
    radius_sd: float = 0.15
    """Relative spread of the cell radius."""
    density: float = 1.0
    """Cells per 40 x 40 px of field."""
    clustering: float = 0.6
    """Fraction of cells placed in clusters around a few centres (the rest uniformly)."""
    speed: float = 1.2
    """Standard deviation of the random velocity kick per frame."""
    persistence: float = 0.8
    """Fraction of the velocity kept from one frame to the next."""
    division_rate: float = 0.015
    """Probability per frame that a cell (old enough) enters mitosis (~ doubling in 45 frames)."""
    min_age: int = 4
    """Frames after birth before a cell may divide."""
    touching: float = 0.88
    """Centres are pushed apart to this fraction of the sum of radii (< 1: neighbours touch)."""
    margin: float = 40.0
    """Cells live in the field extended by this margin, so that they enter and leave it."""


@dataclass
class Population:
    """One array per property; entry i of every array describes cell i.

    Examples
    --------
    >>> pop = seed_population(np.random.default_rng(0), 96, CellParams())
    >>> len(pop) == len(pop.track) == len(pop.y)
    True
    """

    track: np.ndarray
    parent: np.ndarray
    y: np.ndarray
    x: np.ndarray
    vy: np.ndarray
    vx: np.ndarray
    radius: np.ndarray
    target: np.ndarray
    aspect: np.ndarray
    angle: np.ndarray
    modes: np.ndarray
    modes0: np.ndarray
    nuc_dy: np.ndarray
    nuc_dx: np.ndarray
    nuc_scale: np.ndarray
    nuc_aspect: np.ndarray
    nuc_angle: np.ndarray
    tex_y: np.ndarray
    tex_x: np.ndarray
    thickness: np.ndarray
    cyto: np.ndarray
    dna: np.ndarray
    age: np.ndarray
    mitosis: np.ndarray

    def __len__(self) -> int:
        return len(self.track)

    def take(self, index: np.ndarray) -> "Population":
        """The cells at ``index`` (integer or boolean array).

        Examples
        --------
        >>> pop = seed_population(np.random.default_rng(0), 96, CellParams())
        >>> len(pop.take(pop.x < 48)) < len(pop)
        True
        """
        return Population(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def concat(self, other: "Population") -> "Population":
        """This population followed by ``other``.

        Examples
        --------
        >>> pop = seed_population(np.random.default_rng(0), 96, CellParams())
        >>> len(pop.concat(pop)) == 2 * len(pop)
        True
        """
        return Population(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                             for f in dataclasses.fields(self)})


def _new_cells(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, first_track: int,
               params: CellParams) -> Population:
    """Fresh cells at positions (y, x) with random shape, nucleus, texture origin and stain levels."""
    n = len(y)
    target = params.radius * np.exp(rng.normal(0.0, params.radius_sd, n))
    modes0 = rng.normal(0.0, 1.0, (n, MODES, 2)) * (0.13 / np.arange(2, 2 + MODES) ** 0.8)[None, :, None]
    return Population(
        track=np.arange(first_track, first_track + n, dtype=np.int64),
        parent=np.zeros(n, np.int64),
        y=np.asarray(y, float), x=np.asarray(x, float),
        vy=rng.normal(0.0, params.speed, n), vx=rng.normal(0.0, params.speed, n),
        radius=target.copy(), target=target,
        aspect=1.0 + rng.gamma(2.0, 0.18, n),
        angle=rng.uniform(0.0, np.pi, n),
        modes=modes0.copy(), modes0=modes0,
        nuc_dy=rng.normal(0.0, 0.08, n), nuc_dx=rng.normal(0.0, 0.12, n),
        nuc_scale=rng.uniform(0.38, 0.48, n),
        nuc_aspect=1.0 + rng.gamma(2.0, 0.08, n),
        nuc_angle=rng.normal(0.0, 0.3, n),
        tex_y=rng.integers(TEXTURE_MARGIN, TEXTURE_MARGIN + TEXTURE_SIZE, n),
        tex_x=rng.integers(TEXTURE_MARGIN, TEXTURE_MARGIN + TEXTURE_SIZE, n),
        thickness=rng.uniform(0.8, 1.2, n),
        cyto=np.exp(rng.normal(0.0, 0.35, n)),
        dna=np.exp(rng.normal(0.0, 0.2, n)),
        age=rng.integers(0, 2 * params.min_age, n),
        mitosis=np.zeros(n, np.int64),
    )


def seed_population(rng: np.random.Generator, size: int, params: CellParams) -> Population:
    """Initial cells over the field (plus margin): some in clusters, some alone, pushed apart.

    Examples
    --------
    >>> pop = seed_population(np.random.default_rng(0), 96, CellParams())
    >>> bool(pop.track[0] == 1 and (pop.parent == 0).all())   # tracks numbered from 1, no parents yet
    True
    """
    lo, hi = -params.margin, size + params.margin
    n = max(1, int(round(params.density * (hi - lo) ** 2 / 40.0**2)))
    n_clustered = int(round(params.clustering * n))
    n_centres = max(1, n_clustered // 6)
    centres = rng.uniform(lo, hi, (n_centres, 2))
    which = rng.integers(0, n_centres, n_clustered)
    clustered = centres[which] + rng.normal(0.0, 1.6 * params.radius, (n_clustered, 2))
    scattered = rng.uniform(lo, hi, (n - n_clustered, 2))
    pos = np.clip(np.concatenate([clustered, scattered]), lo, hi)
    pop = _new_cells(rng, pos[:, 0], pos[:, 1], 1, params)
    _relax(pop, size, params, iterations=40)
    return pop


def _relax(pop: Population, size: int, params: CellParams, iterations: int) -> None:
    """Push overlapping cells apart (in place) until centres are ``touching`` x the sum of radii."""
    lo, hi = -params.margin, size + params.margin
    if len(pop) < 2:
        return
    r = pop.radius * np.sqrt(np.where(pop.mitosis > 0, 1.0, 0.5 * (1 + pop.aspect)))
    for _ in range(iterations):
        pos = np.stack([pop.y, pop.x], axis=1)
        pairs = cKDTree(pos).query_pairs(2.0 * r.max(), output_type="ndarray")
        if len(pairs) == 0:
            break
        i, j = pairs[:, 0], pairs[:, 1]
        delta = pos[j] - pos[i]
        dist = np.maximum(np.hypot(delta[:, 0], delta[:, 1]), 1e-6)
        overlap = params.touching * (r[i] + r[j]) - dist
        keep = overlap > 0
        if not keep.any():
            break
        push = (0.5 * overlap[keep] / dist[keep])[:, None] * delta[keep]
        shift = np.zeros_like(pos)
        np.add.at(shift, i[keep], -push)
        np.add.at(shift, j[keep], push)
        pop.y = np.clip(pop.y + 0.5 * shift[:, 0], lo, hi)
        pop.x = np.clip(pop.x + 0.5 * shift[:, 1], lo, hi)


def _divide(rng: np.random.Generator, pop: Population, next_track: int, params: CellParams) -> tuple[Population, int]:
    """Replace every cell in mitosis (mitosis == 2) by two daughters along its long axis."""
    dividing = np.flatnonzero(pop.mitosis >= 2)
    if len(dividing) == 0:
        return pop, next_track
    mothers = pop.take(dividing)
    m = len(mothers)
    ca, sa = np.cos(mothers.angle), np.sin(mothers.angle)
    off = 0.5 * mothers.radius
    ys = np.concatenate([mothers.y + off * sa, mothers.y - off * sa])
    xs = np.concatenate([mothers.x + off * ca, mothers.x - off * ca])
    daughters = _new_cells(rng, ys, xs, next_track, params)
    twice = np.concatenate([np.arange(m), np.arange(m)])
    daughters.parent = mothers.track[twice]
    daughters.radius = 0.72 * mothers.radius[twice]
    daughters.target = mothers.target[twice] * rng.uniform(0.9, 1.1, 2 * m)
    daughters.vy = np.concatenate([sa, -sa]) * 1.0
    daughters.vx = np.concatenate([ca, -ca]) * 1.0
    daughters.aspect = 1.0 + 0.5 * (daughters.aspect - 1.0)
    daughters.cyto = mothers.cyto[twice] * rng.uniform(0.55, 0.7, 2 * m)  # the dye is shared out
    daughters.dna = mothers.dna[twice] * rng.uniform(0.85, 1.0, 2 * m)
    daughters.age = np.zeros(2 * m, np.int64)
    rest = pop.take(pop.mitosis < 2)
    return rest.concat(daughters), next_track + 2 * m


def step_population(rng: np.random.Generator, pop: Population, size: int, params: CellParams,
                    next_track: int) -> tuple[Population, int]:
    """Advance one frame: divide cells that were in mitosis, start mitoses, move, reshape, push apart.

    Cells in mitosis round up for one frame (drawn round, thick and phase-bright) and divide at the next.
    The random numbers drawn depend only on the history so far, so a longer run repeats a shorter one.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> before = pop.y.copy()
    >>> pop, next_track = step_population(rng, pop, 96, CellParams(), next_track=len(pop) + 1)
    >>> bool(np.abs(pop.y[:5] - before[:5]).max() > 0)              # cells moved
    True
    """
    pop.mitosis = np.where(pop.mitosis > 0, pop.mitosis + 1, 0)
    pop, next_track = _divide(rng, pop, next_track, params)
    n = len(pop)
    pop.age = pop.age + 1
    start = (pop.mitosis == 0) & (pop.age >= params.min_age) & (rng.random(n) < params.division_rate)
    pop.mitosis = np.where(start, 1, pop.mitosis)
    slow = np.where(pop.mitosis > 0, 0.2, 1.0)
    pop.vy = slow * (params.persistence * pop.vy + rng.normal(0.0, params.speed, n))
    pop.vx = slow * (params.persistence * pop.vx + rng.normal(0.0, params.speed, n))
    pop.y = pop.y + pop.vy
    pop.x = pop.x + pop.vx
    pop.angle = pop.angle + rng.normal(0.0, 0.06, n)
    pop.modes = pop.modes0 + 0.85 * (pop.modes - pop.modes0) + rng.normal(0.0, 0.012, pop.modes.shape)
    pop.aspect = np.clip(pop.aspect + rng.normal(0.0, 0.03, n), 1.0, 2.5)
    pop.radius = pop.radius + 0.25 * (pop.target - pop.radius)
    _relax(pop, size, params, iterations=6)
    lo, hi = -params.margin, size + params.margin
    for pos, vel in (("y", "vy"), ("x", "vx")):  # bounce off the edge of the simulated area
        p, v = getattr(pop, pos), getattr(pop, vel)
        out = (p <= lo) | (p >= hi)
        setattr(pop, vel, np.where(out, -v, v))
        setattr(pop, pos, np.clip(p, lo, hi))
    return pop, next_track
