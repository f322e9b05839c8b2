"""Write a synthetic scenario-A experiment: bright-field time-lapse, end-point stains, truth, TOML.

Layout of ``out_dir``::

    experiment.toml                                   loadable by stainseg.config.load_config
    images/<well>_s<site>_t<time:02d>_z<z>_BF.tif     bright-field planes z = 0, 1, 2 (lowest first)
    images/<well>_s<site>_t<time:02d>_Hoechst.tif     nuclear stain, last time point only
    images/<well>_s<site>_t<time:02d>_CellTracker.tif cytoplasmic stain, last time point only
    truth/cells/<well>_s<site>_t<time:02d>.tif        true cell labels of every frame
    truth/nuclei/<well>_s<site>_t<time:02d>.tif       true nucleus labels (end point; nucleus label = cell label)
    truth/tracks.csv                                  well, site, time, label, track_id, parent_track_id, ...
    truth/params.json                                 the generator's parameters
    preview.png                                       with ``preview=True``
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stainseg.errors import StainsegError
from stainseg.io.atomic import write_csv, write_json, write_text
from stainseg.io.images import write_image, write_labels
from stainseg.synth.cells import CellParams, make_textures, render_cells, seed_population, step_population
from stainseg.synth.render import (OpticsParams, bright_field, cytoplasm_stain, illumination_field, make_debris,
                                   nuclear_stain, optical_thickness)

PATTERN = r"(?P<well>[A-P]\d{2})_s(?P<site>\d+)_t(?P<time>\d+)(?:_z(?P<z>\d))?_(?P<channel>[A-Za-z]+)\.tif"
BF, NUCLEI, CYTOPLASM = "BF", "Hoechst", "CellTracker"
TRACK_COLUMNS = ["well", "site", "time", "label", "track_id", "parent_track_id", "mitosis", "area", "y", "x"]

# independent random streams per (well, site): changing `times` or `sites` leaves the others unchanged
_SIMULATION, _STATIC, _FRAME, _ENDPOINT = 0, 1, 2, 3


def well_names(wells: int) -> list[str]:
    """Plate well names A01, A02, ... (12 columns per row; 24 beyond 96 wells).

    Examples
    --------
    >>> well_names(3), well_names(13)[-1]
    (['A01', 'A02', 'A03'], 'B01')
    """
    columns = 12 if wells <= 96 else 24
    if wells > 16 * columns:
        raise StainsegError(f"at most 384 wells can be named (A01..P24), got --wells {wells}")
    return [f"{'ABCDEFGHIJKLMNOP'[i // columns]}{i % columns + 1:02d}" for i in range(wells)]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _check(wells: int, sites: int, times: int, size: int, density: float) -> None:
    for name, value, low in (("wells", wells, 1), ("sites", sites, 1), ("times", times, 1), ("size", size, 64)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise StainsegError(f"--{name} must be an integer >= {low}, got {value!r}")
    if sites > 99:
        raise StainsegError(f"--sites must be at most 99, got {sites}")
    if times > 100:
        raise StainsegError(f"--times must be at most 100 (two-digit time field), got {times}")
    if size > 16384:
        raise StainsegError(f"--size must be at most 16384, got {size}")
    if not density > 0:
        raise StainsegError(f"density must be > 0, got {density}")


def _experiment_toml(name: str, sites: int) -> str:
    test_sites = f'test_sites = ["{sites}"]' if sites > 1 else "test_sites = []"
    return f"""# Synthetic scenario-A experiment written by stainseg.synth (true labels under truth/)
name    = "{name}"
root    = "images"
pattern = '{PATTERN}'
objects = "cells"

[channels]
input     = ["{BF}"]
nuclei    = "{NUCLEI}"
cytoplasm = "{CYTOPLASM}"

[endpoint]
time = "last"

[split]
{test_sites}
"""


def _planned_images(names: list[str], sites: int, times: int, planes: int) -> set[str]:
    files = set()
    for well in names:
        for site in range(1, sites + 1):
            for t in range(times):
                stem = f"{well}_s{site}_t{t:02d}"
                files.update(f"{stem}_z{z}_{BF}.tif" for z in range(planes))
            stem = f"{well}_s{site}_t{times - 1:02d}"
            files.update({f"{stem}_{NUCLEI}.tif", f"{stem}_{CYTOPLASM}.tif"})
    return files


def _track_rows(well: str, site: int, time: int, fields, pop) -> list[dict]:
    labels = fields.labels
    n = len(fields.tracks)
    area = np.bincount(labels.ravel(), minlength=n)
    yy, xx = np.indices(labels.shape)
    sy = np.bincount(labels.ravel(), weights=yy.ravel(), minlength=n)
    sx = np.bincount(labels.ravel(), weights=xx.ravel(), minlength=n)
    rows = []
    for label in range(1, n):
        i = fields.index[label]
        rows.append({
            "well": well, "site": site, "time": time, "label": label,
            "track_id": int(fields.tracks[label]), "parent_track_id": int(pop.parent[i]),
            "mitosis": int(pop.mitosis[i] > 0), "area": int(area[label]),
            "y": f"{sy[label] / area[label]:.2f}", "x": f"{sx[label] / area[label]:.2f}",
        })
    return rows


def _generate_site(out: Path, seed: int, w: int, well: str, s: int, times: int, size: int,
                   cells: CellParams, optics: OpticsParams, levels: dict[str, float]) -> list[dict]:
    """Simulate and write every frame of one site; return its rows of tracks.csv."""
    sim = _rng(seed, w, s, _SIMULATION)
    static = _rng(seed, w, s, _STATIC)
    textures = make_textures(static)
    debris = make_debris(static, size)
    light_bf = illumination_field(static, size, optics.illumination)
    light_nuc = illumination_field(static, size, optics.stain_illumination)
    light_cyto = illumination_field(static, size, optics.stain_illumination)
    pop = seed_population(sim, size, cells)
    next_track = int(pop.track.max()) + 1
    rows: list[dict] = []
    site = s + 1
    for t in range(times):
        if t > 0:
            pop, next_track = step_population(sim, pop, size, cells, next_track)
        fields = render_cells(pop, size, textures)
        frame = _rng(seed, w, s, _FRAME, t)
        height = optical_thickness(pop, fields, debris)
        focus = float(frame.normal(0.0, 0.4))
        planes = bright_field(frame, height, fields, light_bf, optics, focus, levels["background"])
        stem = f"{well}_s{site}_t{t:02d}"
        for z, plane in enumerate(planes):
            write_image(out / "images" / f"{stem}_z{z}_{BF}.tif", plane)
        write_labels(out / "truth" / "cells" / f"{stem}.tif", fields.labels)
        rows.extend(_track_rows(well, site, t, fields, pop))
        if t == times - 1:
            end = _rng(seed, w, s, _ENDPOINT)
            write_image(out / "images" / f"{stem}_{NUCLEI}.tif",
                        nuclear_stain(end, pop, fields, light_nuc, optics, levels["nuclear"]))
            write_image(out / "images" / f"{stem}_{CYTOPLASM}.tif",
                        cytoplasm_stain(end, pop, fields, light_cyto, optics, levels["cytoplasm"]))
            write_labels(out / "truth" / "nuclei" / f"{stem}.tif", fields.nuclei)
    return rows


def generate_experiment(out_dir: str | Path, wells: int = 1, sites: int = 2, times: int = 4, size: int = 256,
                        seed: int = 0, preview: bool = False, density: float = 1.0) -> Path:
    """Write a realistic synthetic bright-field time-lapse experiment (scenario A) with its true labels.

    Cells (~30-45 px across, ``density`` cells per 40 x 40 px) move with persistence, change shape and
    divide; each frame has a 3-plane bright-field stack, the last frame also a Hoechst and a
    CellTracker image. The same ``seed`` gives byte-identical files; the first frames of a site do not
    depend on ``times``, ``sites`` or ``wells``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created); must not hold image files of another experiment.
    wells, sites, times : int
        Wells (A01, A02, ...), sites per well (1-based) and time points (0-based; the last is the end point).
    size : int
        Side of each square image in px.
    seed : int
        Seed of all random streams.
    preview : bool
        Also write ``preview.png`` (the first site's end point: BF planes, stains, true labels).
    density : float
        Cells per 40 x 40 px.

    Returns
    -------
    Path
        The experiment TOML (``out_dir/experiment.toml``).

    Examples
    --------
    >>> import tempfile
    >>> from stainseg.config import load_config
    >>> toml = generate_experiment(tempfile.mkdtemp(), sites=2, times=2, size=64, seed=1)
    >>> cfg = load_config(toml)
    >>> cfg.channels.input, cfg.channels.nuclei
    (['BF'], 'Hoechst')
    """
    _check(wells, sites, times, size, density)
    out = Path(out_dir)
    names = well_names(wells)
    cells, optics = CellParams(density=density), OpticsParams()
    planned = _planned_images(names, sites, times, optics.planes)
    images = out / "images"
    if images.is_dir():
        stray = sorted(p.name for p in images.iterdir() if not p.name.startswith(".") and p.name not in planned)
        if stray:
            raise StainsegError(f"already holds files of another experiment (e.g. {stray[0]}); choose an empty "
                                "output folder", images)
    rows: list[dict] = []
    for w, well in enumerate(names):
        plate = _rng(seed, w)  # inter-well variation of illumination and staining
        levels = {"background": optics.background * plate.uniform(0.9, 1.1),
                  "nuclear": optics.nuclear_level * float(np.exp(plate.normal(0.0, 0.15))),
                  "cytoplasm": optics.cytoplasm_level * float(np.exp(plate.normal(0.0, 0.15)))}
        for s in range(sites):
            rows.extend(_generate_site(out, seed, w, well, s, times, size, cells, optics, levels))
    write_csv(out / "truth" / "tracks.csv", rows, TRACK_COLUMNS)
    write_json(out / "truth" / "params.json", {
        "seed": seed, "wells": wells, "sites": sites, "times": times, "size": size,
        "endpoint_time": times - 1, "cells": dataclasses.asdict(cells), "optics": dataclasses.asdict(optics)})
    toml = out / "experiment.toml"
    write_text(toml, _experiment_toml(f"synthetic-seed{seed}", sites))
    if preview:
        from stainseg.synth.preview import write_preview

        write_preview(out, names[0], 1, times - 1)
    return toml
