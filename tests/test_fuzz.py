"""Fuzzing the readers: mutated TIFF / PNG bytes and random experiment files.

Property: every input either loads or raises :class:`StainsegError` with a one-line message naming
the file — no other exception, no hang (each example runs under an alarm), no crash. The whole
module is bounded by ``max_examples`` so that it stays well under 60 s in CI.
"""

from __future__ import annotations

import io
import signal
import string
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stainseg.config import load_config
from stainseg.errors import StainsegError
from stainseg.io.images import read_image, read_labels, read_plane
from stainseg.io.layout import scan

EXAMPLE_SECONDS = 10  # one example running longer than this is a hang
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextmanager
def no_hang(seconds: int = EXAMPLE_SECONDS):
    """Fail (instead of hanging the test run) when the body runs longer than ``seconds``."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows: no alarm, rely on the CI timeout
        yield
        return

    def alarm(signum, frame):
        raise TimeoutError(f"reader hung for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _seeds() -> dict[str, bytes]:
    """Small valid files of the kinds users give: TIFF (plain, zlib, multi-page, float, uint32 labels), PNG (gray, RGB)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 4000, (24, 20), dtype=np.uint16)
    out: dict[str, bytes] = {}

    def tif(**kwargs) -> bytes:
        buf = io.BytesIO()
        tifffile.imwrite(buf, **kwargs)
        return buf.getvalue()

    out["tif"] = tif(data=gray)
    out["tif_zlib"] = tif(data=gray, compression="zlib")
    out["tif_stack"] = tif(data=np.stack([gray, gray // 2, gray // 3]))
    out["tif_float"] = tif(data=gray.astype(np.float32) / 7)
    out["tif_labels32"] = tif(data=(gray.astype(np.uint32) * 30), compression="zlib")
    out["ome"] = tif(data=np.stack([gray, gray]), ome=True, metadata={"axes": "CYX"})
    for mode, arr in (("png_gray", (gray // 16).astype(np.uint8)), ("png_rgb", np.stack([(gray // 16).astype(np.uint8)] * 3, -1))):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out[mode] = buf.getvalue()
    return out


SEEDS = _seeds()


@st.composite
def mutated_image(draw) -> bytes:
    """A seed file with random byte flips, a random truncation, and/or a random insertion."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 4)) == 0:
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _check_reader(reader, path: Path) -> None:
    with no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile / PIL warn about odd files; warnings are not failures
        try:
            result = reader(path)
        except StainsegError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            return
    assert isinstance(result, np.ndarray) and result.size > 0


@pytest.mark.parametrize("reader", [read_image, read_plane, read_labels], ids=lambda f: f.__name__)
@FUZZ
@given(data=mutated_image(), suffix=st.sampled_from([".tif", ".png"]))
def test_mutated_image_files(tmp_path, reader, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _check_reader(reader, path)


@settings(FUZZ, max_examples=60)
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(lambda b: b"II*\x00" + b),
                      st.binary(max_size=600).map(lambda b: b"MM\x00*" + b), st.binary(max_size=600).map(lambda b: b"\x89PNG\r\n\x1a\n" + b)))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "random.tif"
    path.write_bytes(data)
    _check_reader(read_image, path)


# --------------------------------------------------------------------------- experiment files

VALID = """name = "fuzz"
root = "images"
pattern = '(?P<well>[A-P]\\d{2})_s(?P<site>\\d+)_z(?P<z>\\d)_(?P<channel>[A-Za-z]+)\\.tif'
objects = "cells"

[channels]
input = ["BF"]
nuclei = "Hoechst"
cytoplasm = "CellTracker"

[split]
test_sites = ["2"]

[segment]
tile_size = 64
"""

KEYS = ["name", "root", "pattern", "objects", "channels", "input", "nuclei", "cytoplasm", "split", "test_sites",
        "segment", "tile_size", "train", "iterations", "groundtruth", "illumination", "model", "depth", "bogus"]
toml_scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                         st.text(max_size=30), st.sampled_from(["cells", "nuclei", "spline", "(?P<channel>.*)", "(", "images", ".."]))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=12)


@pytest.fixture(scope="module")
def experiment_folder(tmp_path_factory) -> Path:
    """A folder with a few tiny image files for random experiment files to scan."""
    folder = tmp_path_factory.mktemp("fuzz_experiment")
    (folder / "images").mkdir()
    for name in ("A01_s1_z0_BF.tif", "A01_s1_z1_BF.tif", "A01_s1_z0_Hoechst.tif", "A01_s2_z0_BF.tif", "notes.txt"):
        (folder / "images" / name).write_bytes(SEEDS["tif"])
    return folder


def _check_config(path: Path) -> None:
    with no_hang():
        try:
            cfg = load_config(path)
        except StainsegError as exc:
            assert "\n" not in str(exc) and path.name in str(exc), str(exc)
            return
        try:
            layout = scan(cfg)
        except StainsegError as exc:
            assert "\n" not in str(exc), str(exc)
            return
        assert layout.image_sets


@FUZZ
@given(table=st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=8), keep=st.booleans())
def test_random_experiment_files(experiment_folder, table, keep):
    """Random TOML tables, alone or merged over a valid experiment file."""
    import tomli_w

    from stainseg.config import tomllib

    data = tomllib.loads(VALID) if keep else {}
    data.update(table)
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):  # NaN keys and the like that TOML cannot hold
        return
    path = experiment_folder / "experiment.toml"
    path.write_text(text, encoding="utf-8")
    _check_config(path)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 6), st.text(string.printable, max_size=6)), max_size=6),
       raw=st.binary(max_size=8))
def test_mutated_experiment_text(experiment_folder, edits, raw):
    """A valid experiment file with random text edits (syntax errors, broken regexes, odd values) and stray bytes."""
    text = VALID
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    path = experiment_folder / "experiment.toml"
    path.write_bytes(text.encode("utf-8") + raw)
    _check_config(path)
