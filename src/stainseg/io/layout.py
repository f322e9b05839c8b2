"""Experiment layout: scan a folder with the experiment's regex and build image sets.

An *image set* is one (well, site, time, ...) position: every named group of the pattern
except ``channel`` and ``z`` is a metadata field that identifies it. Each image set maps
each channel to its files ordered by z (numerically).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from stainseg.config import ExperimentConfig
from stainseg.errors import StainsegError
from stainseg.io.images import IMAGE_SUFFIXES, as_float, read_plane

RESERVED = ("channel", "z")


@dataclass
class ImageSet:
    """One imaged position: metadata fields and, per channel, its files ordered by z.

    Examples
    --------
    >>> from pathlib import Path
    >>> iset = ImageSet({"well": "A01", "site": "1"}, {"DNA": [Path("A01_s1_DNA.tif")], "BF": [Path("A01_s1_BF.tif")]})
    >>> iset.name, sorted(iset.channels)
    ('A01_s1', ['BF', 'DNA'])
    """

    fields: dict[str, str]
    channels: dict[str, list[Path]] = field(default_factory=dict)
    z_values: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A file-name-safe identifier, e.g. ``A01_s1_t03`` or ``well-A14_site-1``.

        Examples
        --------
        >>> ImageSet({"well": "A01", "site": "1", "time": "03"}).name
        'A01_s1_t03'
        >>> ImageSet({"plate": "P1", "well": "A01"}).name
        'plate-P1_well-A01'
        """
        if not self.fields:
            files = next(iter(self.channels.values()))
            return files[0].stem
        short = {"well": "", "site": "s", "time": "t"}
        if set(self.fields) <= set(short):
            return "_".join(short[k] + v for k, v in self.fields.items())
        return "_".join(f"{k}-{v}" for k, v in self.fields.items())

    def files(self, channel: str) -> list[Path]:
        """The files of ``channel`` ordered by z; a one-line error when the channel is missing.

        Examples
        --------
        >>> from pathlib import Path
        >>> iset = ImageSet({"well": "A01"}, {"DNA": [Path("A01_DNA.tif")]})
        >>> iset.files("DNA")
        [PosixPath('A01_DNA.tif')]
        >>> iset.files("GFP")
        Traceback (most recent call last):
        ...
        stainseg.errors.StainsegError: image set A01 has no 'GFP' images (channels found: DNA); check [channels] and pattern
        """
        if channel not in self.channels:
            have = ", ".join(sorted(self.channels)) or "none"
            raise StainsegError(f"image set {self.name} has no '{channel}' images (channels found: {have}); check [channels] and pattern")
        return self.channels[channel]

    def load(self, channel: str) -> np.ndarray:
        """Read all z-planes of ``channel`` as float32, shape (Z, Y, X).

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from stainseg.io.images import write_image
        >>> planes = [write_image(Path(tempfile.mkdtemp()) / f"z{z}.tif", np.ones((16, 16), np.uint16)) for z in range(2)]
        >>> ImageSet({"well": "A01"}, {"BF": planes}).load("BF").shape        # (Z, Y, X) float32
        (2, 16, 16)
        """
        planes = [as_float(read_plane(p), p) for p in self.files(channel)]
        _check_shapes(planes, self.files(channel), self.name)
        return np.stack(planes)

    def load_stack(self, channels: Iterable[str]) -> np.ndarray:
        """Read ``channels`` in order, every z-plane one channel: float32 (C, Y, X).

        Examples
        --------
        >>> import tempfile
        >>> import numpy as np
        >>> from pathlib import Path
        >>> from stainseg.io.images import write_image
        >>> folder = Path(tempfile.mkdtemp())
        >>> files = {c: [write_image(folder / f"{c}.tif", np.ones((16, 16), np.uint16))] for c in ("BF", "DNA")}
        >>> ImageSet({"well": "A01"}, files).load_stack(["BF", "DNA"]).shape
        (2, 16, 16)
        """
        paths = [p for ch in channels for p in self.files(ch)]
        planes = [as_float(read_plane(p), p) for p in paths]
        _check_shapes(planes, paths, self.name)
        return np.stack(planes)


def _check_shapes(planes: list[np.ndarray], paths: list[Path], name: str) -> None:
    first = planes[0].shape
    for plane, path in zip(planes, paths):
        if plane.shape != first:
            raise StainsegError(
                f"shape {plane.shape} differs from {first} of {paths[0].name} in image set {name}; all channels of a position must be registered and equally sized",
                path,
            )


@dataclass
class Layout:
    """Everything found under an experiment's root.

    Examples
    --------
    >>> layout = Layout([ImageSet({"well": "A01"})], unmatched=["notes.tif"], incomplete=[], duplicates=[])
    >>> len(layout.image_sets), layout.unmatched
    (1, ['notes.tif'])
    """

    image_sets: list[ImageSet]
    unmatched: list[str]
    incomplete: list[str]
    duplicates: list[str]

    def summary(self) -> str:
        """Human-readable report of what was found and what looks wrong.

        Examples
        --------
        >>> print(Layout([], ["notes.tif"], [], []).summary())
        0 image sets
        1 files match no pattern, e.g. notes.tif
        """
        lines = [f"{len(self.image_sets)} image sets"]
        for what, items in (("files match no pattern", self.unmatched), ("incomplete image sets", self.incomplete), ("duplicate files", self.duplicates)):
            if items:
                lines.append(f"{len(items)} {what}, e.g. {'; '.join(items[:3])}")
        return "\n".join(lines)


def value_key(value: str) -> tuple[int, float | str]:
    """Sort key for metadata values: numbers by value (``2`` before ``10``, ``1341.95`` before ``1352.25``), then text.

    Examples
    --------
    >>> sorted(["10", "2", "b", "1341.95"], key=value_key)
    ['2', '10', '1341.95', 'b']
    """
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def same_value(a: str, b: str) -> bool:
    """Compare metadata values, numerically when both are numbers ('01' == '1').

    Examples
    --------
    >>> same_value("01", "1"), same_value("A01", "A1")
    (True, False)
    """
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def scan(cfg: ExperimentConfig) -> Layout:
    """Scan ``cfg.root_path`` with ``cfg.pattern`` and group files into image sets.

    The pattern must match the whole path relative to root (with ``/`` separators).
    Only image files (TIFF, PNG, JPEG) are considered. Raises a one-line error when the
    root is missing or the pattern matches nothing.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from stainseg.config import config_from_dict
    >>> from stainseg.io.images import write_image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ["A01_s1_DNA.tif", "A01_s1_BF.tif", "A01_s2_DNA.tif", "A01_s2_BF.tif", "notes.tif"]:
    ...     _ = write_image(root / name, np.ones((16, 16), np.uint16))
    >>> cfg = config_from_dict({"root": str(root), "pattern": "(?P<well>[A-P][0-9]{2})_s(?P<site>[0-9])_(?P<channel>[A-Z]+)[.]tif",
    ...                         "channels": {"input": ["BF"], "nuclei": "DNA"}, "split": {"test_sites": ["2"]}})
    >>> [s.name for s in scan(cfg).image_sets]
    ['A01_s1', 'A01_s2']
    """
    root = cfg.root_path
    where = cfg.source or "<config>"
    if not root.is_dir():
        raise StainsegError(f"experiment root {root} is not a folder; fix 'root' (relative to the experiment file)", where)
    rx = re.compile(cfg.pattern)
    meta_fields = [g for g in rx.groupindex if g not in RESERVED]
    sets: dict[tuple[str, ...], ImageSet] = {}
    unmatched: list[str] = []
    duplicates: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        m = rx.fullmatch(rel)
        if m is None:
            unmatched.append(rel)
            continue
        values = {k: m.group(k) for k in meta_fields if m.group(k) is not None}
        key = tuple(values.get(k, "") for k in meta_fields)
        iset = sets.setdefault(key, ImageSet(fields=values))
        channel = m.group("channel")
        z = m.groupdict().get("z") or ""
        zs = iset.z_values.setdefault(channel, [])
        if z in zs:
            duplicates.append(f"{rel} (same channel '{channel}' and z '{z}' as another file of {iset.name})")
            continue
        zs.append(z)
        iset.channels.setdefault(channel, []).append(path)
    for iset in sets.values():
        for channel in iset.channels:
            order = sorted(range(len(iset.z_values[channel])), key=lambda i: value_key(iset.z_values[channel][i]))
            iset.channels[channel] = [iset.channels[channel][i] for i in order]
            iset.z_values[channel] = [iset.z_values[channel][i] for i in order]
    if not sets:
        example = f" (e.g. '{unmatched[0]}')" if unmatched else ""
        raise StainsegError(f"pattern matches no image file under {root}{example}; fix 'pattern' (it must match the whole path relative to root)", where)
    ordered = sorted(sets.values(), key=lambda s: tuple(value_key(s.fields.get(k, "")) for k in meta_fields))
    incomplete = _find_incomplete(ordered)
    return Layout(image_sets=ordered, unmatched=unmatched, incomplete=incomplete, duplicates=duplicates)


def _find_incomplete(sets: list[ImageSet]) -> list[str]:
    """Image sets whose z-planes of a channel are fewer than that channel's usual count."""
    usual: dict[str, int] = {}
    for channel in {c for s in sets for c in s.channels}:
        counts = [len(s.channels[channel]) for s in sets if channel in s.channels]
        usual[channel] = max(set(counts), key=counts.count)
    problems = []
    for s in sets:
        for channel, files in s.channels.items():
            if len(files) < usual[channel]:
                problems.append(f"{s.name}: channel '{channel}' has {len(files)} of {usual[channel]} z-planes")
    return problems


def endpoint_sets(cfg: ExperimentConfig, sets: list[ImageSet]) -> list[ImageSet]:
    """The image sets that carry the stains: per position the last time point, or the configured time.

    Without a ``time`` field every image set is an end point (fixed cells).

    Examples
    --------
    >>> from stainseg.config import ExperimentConfig
    >>> sets = [ImageSet({"site": "1", "time": t}) for t in ("1", "2", "10")]
    >>> [s.fields["time"] for s in endpoint_sets(ExperimentConfig(), sets)]   # the last time point
    ['10']
    """
    if not any("time" in s.fields for s in sets):
        return list(sets)
    if cfg.endpoint.time != "last":
        chosen = [s for s in sets if same_value(s.fields.get("time", ""), cfg.endpoint.time)]
        if not chosen:
            raise StainsegError(f"no image set has time = {cfg.endpoint.time}; fix [endpoint] time", cfg.source)
        return chosen
    last: dict[tuple, ImageSet] = {}
    for s in sets:
        pos = tuple((k, v) for k, v in s.fields.items() if k != "time")
        if pos not in last or value_key(s.fields["time"]) > value_key(last[pos].fields["time"]):
            last[pos] = s
    return list(last.values())


def is_test(cfg: ExperimentConfig, iset: ImageSet) -> bool:
    """Whether an image set belongs to the held-out test part of the split.

    Examples
    --------
    >>> from stainseg.config import ExperimentConfig, SplitConfig
    >>> cfg = ExperimentConfig(split=SplitConfig(test_sites=["2"]))
    >>> is_test(cfg, ImageSet({"well": "A01", "site": "1"})), is_test(cfg, ImageSet({"well": "A01", "site": "02"}))
    (False, True)
    """
    split = cfg.split
    if any(same_value(iset.fields.get("site", "\0"), v) for v in split.test_sites):
        return True
    if any(same_value(iset.fields.get("well", "\0"), v) for v in split.test_wells):
        return True
    if split.test_fraction > 0 and not split.test_sites and not split.test_wells:
        pos = "|".join(f"{k}={v}" for k, v in sorted(iset.fields.items()) if k != "time") or iset.name
        digest = hashlib.sha256(f"{split.seed}:{pos}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < split.test_fraction
    return False


def check_channels(cfg: ExperimentConfig, sets: list[ImageSet], stains: bool) -> None:
    """Every image set has the input channels (and, for end points, the stains) the config names.

    Examples
    --------
    >>> from pathlib import Path
    >>> from stainseg.config import ChannelsConfig, ExperimentConfig
    >>> cfg = ExperimentConfig(channels=ChannelsConfig(input=["BF"], nuclei="DNA"))
    >>> check_channels(cfg, [ImageSet({"well": "A01"}, {"BF": [Path("a.tif")]})], stains=False)  # inputs there: no error
    >>> check_channels(cfg, [ImageSet({"well": "A01"}, {"BF": [Path("a.tif")]})], stains=True)
    Traceback (most recent call last):
    ...
    stainseg.errors.StainsegError: image set A01 has no 'DNA' images (channels found: BF); check [channels] and pattern
    """
    needed = list(cfg.channels.input)
    if stains:
        needed += [c for c in (cfg.channels.nuclei, cfg.channels.cytoplasm if cfg.objects == "cells" else None) if c]
    for s in sets:
        for channel in needed:
            s.files(channel)
