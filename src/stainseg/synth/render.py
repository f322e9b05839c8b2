"""Render a frame of simulated cells as a bright-field z-stack and as nuclear and cytoplasmic stains.

Whole images are filtered with :mod:`scipy.ndimage` (no per-pixel loops), so a 2048 x 2048 field
renders in about a second per plane.

Bright field follows the weak-phase-object picture (transport of intensity): the intensity change at
defocus ``d`` is proportional to ``d`` times the Laplacian of the optical thickness, so a cell's rim is
bright and its interior dark on one side of focus, and the opposite on the other side; in focus only
weak absorption and granular texture remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from stainseg.synth.cells import CellFields, Population


@dataclass
class OpticsParams:
    """Bright-field and fluorescence imaging (intensities in camera counts).

    Examples
    --------
    >>> optics = OpticsParams()
    >>> optics.offset > 0
    True
    """

    z_step_um: float = 4.0
    """Distance between bright-field planes (scenario A: 3 planes, 4 um apart)."""
    planes: int = 3
    background: float = 2500.0
    """Bright-field background level."""
    halo: float = 0.3
    """Phase (defocus) contrast per um of defocus."""
    absorption: float = 0.03
    """In-focus darkening by the cell's thickness."""
    illumination: float = 1.25
    """Bright-field illumination ratio corner-to-corner."""
    stain_illumination: float = 2.0
    """Stain illumination ratio corner-to-corner (epi-illumination is uneven)."""
    nuclear_level: float = 3500.0
    nuclear_background: float = 350.0
    cytoplasm_level: float = 1200.0
    cytoplasm_background: float = 300.0
    read_noise: float = 6.0
    offset: float = 100.0
    """Camera offset added to every pixel."""


def illumination_field(rng: np.random.Generator, size: int, ratio: float) -> np.ndarray:
    """Smooth multiplicative illumination (mean about 1) whose corner-to-corner ratio is about ``ratio``.

    A ramp along a random direction plus a little vignetting; ``ratio = 1`` gives a flat field.

    Examples
    --------
    >>> import numpy as np
    >>> light = illumination_field(np.random.default_rng(0), 128, ratio=1.5)
    >>> light.shape, round(float(np.exp(np.log(light).mean())), 3)    # geometric mean 1
    ((128, 128), 1.0)
    """
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    ramp = ramp / (np.abs(np.cos(angle)) + np.abs(np.sin(angle)))  # in [-0.5, 0.5]
    cy, cx = (float(v) for v in rng.uniform(-0.2, 0.2, 2))
    vignette = (coords[:, None] - cy) ** 2 + (coords[None, :] - cx) ** 2
    log_field = np.log(ratio) * ramp - 0.15 * np.log(ratio) * vignette
    return np.exp(log_field - log_field.mean()).astype(np.float32)


def camera(rng: np.random.Generator, expected: np.ndarray, read_noise: float, offset: float) -> np.ndarray:
    """Shot and read (Gaussian) noise on expected photon counts; uint16.

    Shot noise is Poisson; above 100 counts its (indistinguishable) Gaussian approximation is drawn,
    which is several times faster on large images.

    Examples
    --------
    >>> import numpy as np
    >>> image = camera(np.random.default_rng(0), np.full((64, 64), 400.0), read_noise=3.0, offset=100.0)
    >>> image.dtype.name, bool(abs(image.mean() - 500) < 5)          # offset + expected photons
    ('uint16', True)
    """
    expected = np.clip(expected, 0.0, None).astype(np.float32)
    noise = rng.standard_normal(expected.shape, dtype=np.float32)
    counts = expected + np.sqrt(expected) * noise
    low = expected < 100.0
    if low.any():
        counts[low] = rng.poisson(expected[low])
    counts += read_noise * rng.standard_normal(expected.shape, dtype=np.float32) + offset
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def haze(signal: np.ndarray, sigma: float) -> np.ndarray:
    """Wide Gaussian blur (out-of-focus light), computed on a 4x down-sampled copy for speed.

    Examples
    --------
    >>> import numpy as np
    >>> spot = np.zeros((64, 64), np.float32); spot[32, 32] = 1.0
    >>> blurred = haze(spot, sigma=8.0)
    >>> blurred.shape, bool(blurred.max() < 0.1)
    ((64, 64), True)
    """
    small = ndi.gaussian_filter(signal[::4, ::4], sigma / 4.0, mode="nearest")
    zoom = [n / m for n, m in zip(signal.shape, small.shape)]
    return ndi.zoom(small, zoom, order=1, mode="nearest", grid_mode=True)[: signal.shape[0], : signal.shape[1]]


def make_debris(rng: np.random.Generator, size: int) -> np.ndarray:
    """Static optical thickness of a few small particles on the glass (unlabelled).

    Examples
    --------
    >>> import numpy as np
    >>> debris = make_debris(np.random.default_rng(0), 128)
    >>> debris.shape, bool(debris.min() >= 0)
    ((128, 128), True)
    """
    out = np.zeros((size, size), np.float32)
    n = max(1, size * size // 15000)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    out[ys, xs] = rng.uniform(3.0, 12.0, n)
    return ndi.gaussian_filter(out, 1.2)


def optical_thickness(pop: Population, fields: CellFields, debris: np.ndarray | None = None) -> np.ndarray:
    """Optical thickness (arbitrary units, ~1 at a cell's centre): dome-shaped body, thicker nucleus, texture.

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.synth.cells import CellParams, make_textures, render_cells, seed_population
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> light = illumination_field(rng, 96, 1.3)
    >>> height = optical_thickness(pop, fields)
    >>> bool(height[fields.labels > 0].mean() > height[fields.labels == 0].mean())
    True
    """
    idx = fields.index
    rows = np.where(idx >= 0, idx, 0)
    thick = np.where(idx >= 0, pop.thickness[rows] * np.where(pop.mitosis[rows] > 0, 1.9, 1.0), 0.0)
    t = thick[fields.labels].astype(np.float32)
    body = np.sqrt(fields.depth) * (1.0 + 0.15 * fields.low + 0.05 * fields.grain)
    nucleus = 0.35 * np.sqrt(fields.nuc_depth) * (1.0 + 0.2 * fields.chromatin)
    height = t * (body + nucleus)
    if debris is not None:
        height = height + debris
    return height.astype(np.float32)


def bright_field(rng: np.random.Generator, height: np.ndarray, fields: CellFields, illumination: np.ndarray,
                 optics: OpticsParams, focus_um: float = 0.0, background: float | None = None) -> list[np.ndarray]:
    """The bright-field z-stack (uint16 planes, lowest first) of one frame.

    Plane k is at ``(k - (planes - 1) / 2) * z_step_um`` from the nominal focus; ``focus_um`` shifts the
    true focus a little (drift), so the middle plane keeps a faint signed contrast.

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.synth.cells import CellParams, make_textures, render_cells, seed_population
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> light = illumination_field(rng, 96, 1.3)
    >>> planes = bright_field(rng, optical_thickness(pop, fields), fields, light, OpticsParams())
    >>> len(planes), planes[0].dtype.name
    (3, 'uint16')
    """
    level = optics.background if background is None else background
    inside = (fields.labels > 0).astype(np.float32)
    absorb = 1.0 - optics.absorption * height - 0.02 * fields.grain * inside
    planes = []
    for k in range(optics.planes):
        defocus = (k - (optics.planes - 1) / 2.0) * optics.z_step_um - focus_um
        scale = 1.3 + 0.12 * abs(defocus)
        phase = ndi.gaussian_laplace(height, scale) * scale**2
        image = absorb + optics.halo * defocus * phase
        image = ndi.gaussian_filter(image, 0.5 + 0.15 * abs(defocus))
        planes.append(camera(rng, level * illumination * image, optics.read_noise, optics.offset))
    return planes


def nuclear_stain(rng: np.random.Generator, pop: Population, fields: CellFields, illumination: np.ndarray,
                  optics: OpticsParams, level: float | None = None) -> np.ndarray:
    """Hoechst-like image: bright textured nuclei (condensed and brighter in mitosis), blur, haze, noise.

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.synth.cells import CellParams, make_textures, render_cells, seed_population
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> light = illumination_field(rng, 96, 1.3)
    >>> dna = nuclear_stain(rng, pop, fields, light, OpticsParams())
    >>> bool(dna[fields.nuclei > 0].mean() > 2 * dna[fields.labels == 0].mean())
    True
    """
    level = optics.nuclear_level if level is None else level
    idx = fields.index
    rows = np.where(idx >= 0, idx, 0)
    dna = np.where(idx >= 0, pop.dna[rows] * np.where(pop.mitosis[rows] > 0, 1.6, 1.0), 0.0)
    inside = fields.nuc_depth > 0
    signal = dna[fields.nuclei] * (0.6 + 0.4 * np.sqrt(fields.nuc_depth)) * (1.0 + 0.25 * fields.chromatin) * inside
    signal = ndi.gaussian_filter(signal.astype(np.float32), 1.0)
    signal += 0.05 * haze(signal, 12.0)  # out-of-focus haze
    expected = (optics.nuclear_background + level * signal) * illumination
    return camera(rng, expected, optics.read_noise, optics.offset)


def cytoplasm_stain(rng: np.random.Generator, pop: Population, fields: CellFields, illumination: np.ndarray,
                    optics: OpticsParams, level: float | None = None) -> np.ndarray:
    """CellTracker-like image: whole cells, intensity varying per cell, thicker parts brighter, blur, noise.

    Examples
    --------
    >>> import numpy as np
    >>> from stainseg.synth.cells import CellParams, make_textures, render_cells, seed_population
    >>> rng = np.random.default_rng(0)
    >>> pop = seed_population(rng, 96, CellParams())
    >>> fields = render_cells(pop, 96, make_textures(rng))
    >>> light = illumination_field(rng, 96, 1.3)
    >>> cyto = cytoplasm_stain(rng, pop, fields, light, OpticsParams())
    >>> bool(cyto[fields.labels > 0].mean() > cyto[fields.labels == 0].mean())
    True
    """
    level = optics.cytoplasm_level if level is None else level
    idx = fields.index
    rows = np.where(idx >= 0, idx, 0)
    cyto = np.where(idx >= 0, pop.cyto[rows], 0.0)
    inside = fields.labels > 0
    signal = cyto[fields.labels] * (0.35 + 0.65 * np.sqrt(fields.depth)) * (1.0 + 0.15 * fields.low) * inside
    signal = ndi.gaussian_filter(signal.astype(np.float32), 1.3)
    signal += 0.04 * haze(signal, 12.0)
    expected = (optics.cytoplasm_background + level * signal) * illumination
    return camera(rng, expected, optics.read_noise, optics.offset)
