"""Bad input through the real command line: a one-line message naming the file and the fix, no traceback,
a non-zero exit code (or a per-item failure in run.json), and no partial, zero-byte or temporary output file.

Every case is listed with its observed message in docs/errors.md.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stainseg.cli import main
from stainseg.config import ModelConfig, load_config
from stainseg.io.images import read_image, read_labels, write_labels
from stainseg.model import Model
from stainseg.synth import generate_experiment

SIZE = 64


# --------------------------------------------------------------------------- fixtures and helpers

def make_model(out_dir: Path, toml: Path, in_channels: int, seed: int = 0) -> Path:
    """A small model directory with seeded random weights (no training needed)."""
    cfg = load_config(toml)
    cfg.model = ModelConfig(in_channels=in_channels, base_width=4, depth=2, residual_blocks=1)
    cfg.segment.tile_size = SIZE
    cfg.segment.device = "cpu"
    cfg.groundtruth.illumination = "none"  # fast: no per-plane spline fit before inference
    torch.manual_seed(seed)
    return Model.new(["BF"], cfg=cfg, in_channels=in_channels).save(out_dir)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A synthetic experiment (2 sites x 2 times, 3 BF planes each) and 1- and 3-channel models."""
    base = tmp_path_factory.mktemp("bad_input")
    toml = generate_experiment(base / "exp", wells=1, sites=2, times=2, size=SIZE, seed=0)
    return {"base": base, "exp": toml.parent, "toml": toml,
            "model1": make_model(base / "model1", toml, 1), "model3": make_model(base / "model3", toml, 3),
            "plane": sorted((toml.parent / "images").glob("*_z0_BF.tif"))[0]}


@pytest.fixture
def exp(world, tmp_path) -> Path:
    """A private copy of the experiment folder; returns its experiment.toml."""
    shutil.copytree(world["exp"], tmp_path / "exp")
    return tmp_path / "exp" / "experiment.toml"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def stderr_lines(err: str) -> list[str]:
    """What a command printed on stderr, progress bars left out; never a traceback."""
    assert "Traceback" not in err
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith(("segment:", "ground truth:"))]


def error_line(err: str) -> str:
    """The stderr of a failed command: exactly one line (progress bars aside) and no traceback."""
    lines = stderr_lines(err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("stainseg: error: ")
    return lines[0]


def assert_clean(out: Path) -> None:
    """No zero-byte, temporary or unreadable file in an output folder (which may not exist at all)."""
    if not out.exists():
        return
    for path in out.rglob("*"):
        if path.is_dir():
            continue
        assert not path.name.endswith(".tmp"), f"temporary file left: {path}"
        assert path.stat().st_size > 0 or path.name == ".stainseg.lock", f"zero-byte file left: {path}"
        if path.suffix == ".tif":
            read_labels(path)
        if path.suffix == ".json":
            json.loads(path.read_text())
    assert not (out / ".stainseg.lock").exists(), "lock file left behind"


def _record(kind: str, message: str) -> None:
    """With STAINSEG_RECORD_ERRORS=FILE, append each observed message (for the table in docs/errors.md)."""
    target = os.environ.get("STAINSEG_RECORD_ERRORS")
    if target:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(f"{test}\t{kind}\t{message}\n")


def assert_fails_cleanly(capsys, argv, out: Path, *needles: str) -> str:
    """The whole command fails: exit 2, one line naming ``needles`` (file and hint), nothing half-written."""
    rc, _, err = run_cli(capsys, *argv)
    line = error_line(err)
    assert rc == 2, (rc, line)
    for needle in needles:
        assert needle in line, (needle, line)
    assert_clean(out)
    _record("exit 2", line)
    return line


def assert_item_fails(capsys, argv, out: Path, *needles: str) -> str:
    """One item of a batch fails: exit 1, the reason in run.json 'failed' and on stdout, no label file for it."""
    rc, stdout, err = run_cli(capsys, *argv)
    assert "Traceback" not in err + stdout
    assert rc == 1, (rc, stdout, err)
    assert stderr_lines(err) == []  # no library log lines or warnings beside the report
    failed = json.loads((out / "run.json").read_text())["failed"]
    assert len(failed) == 1, failed
    reason = failed[0]["error"]
    assert "\n" not in reason
    for needle in needles:
        assert needle in reason, (needle, reason)
    assert f"failed: {failed[0]['image']}: {reason}" in stdout
    assert not (out / "labels" / f"{failed[0]['image']}.tif").exists()
    assert_clean(out)
    _record("exit 1, run.json failed", reason)
    return reason


def segment_one(capsys, world, image: Path, tmp_path: Path, *needles: str, model: str = "model1") -> str:
    """Segment one bad image file: a per-item failure naming the file."""
    out = tmp_path / "out"
    return assert_item_fails(capsys, ["segment", world[model], image, "-o", out], out, image.name, *needles)


def write_tif(path: Path, data: np.ndarray) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-size arrays make a 'nonconformant TIFF' warning
        tifffile.imwrite(path, data)
    return path


# --------------------------------------------------------------------------- image files

def test_missing_file(capsys, world, tmp_path):
    segment_one(capsys, world, tmp_path / "nowhere.tif", tmp_path, "file not found", "check the path")


def test_empty_file(capsys, world, tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    segment_one(capsys, world, tmp_path / "empty.tif", tmp_path, "empty (0 bytes)")


def test_truncated_tiff(capsys, world, tmp_path):
    data = world["plane"].read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 3])
    segment_one(capsys, world, tmp_path / "truncated.tif", tmp_path, "corrupt or truncated", "re-export")


def test_corrupt_tiff(capsys, world, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    segment_one(capsys, world, tmp_path / "corrupt.tif", tmp_path, "re-export")


def test_tiff_with_broken_tags(capsys, caplog, world, tmp_path):
    """A TIFF whose StripOffsets tag is damaged: tifffile's own log lines must not reach the user.

    (pytest captures log records, so they are checked with caplog rather than on stderr.)
    """
    import struct

    data = bytearray(world["plane"].read_bytes())
    at = data.find(struct.pack("<HH", 273, 4))  # StripOffsets, LONG
    assert at > 0
    data[at:at + 2] = struct.pack("<H", 65000)
    (tmp_path / "broken_tags.tif").write_bytes(bytes(data))
    segment_one(capsys, world, tmp_path / "broken_tags.tif", tmp_path, "missing data offset", "re-export")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tifffile")] == []


def test_not_an_image(capsys, world, tmp_path):
    (tmp_path / "notes.tif").write_text("this is a text file\n")
    segment_one(capsys, world, tmp_path / "notes.tif", tmp_path, "not a TIFF, PNG or JPEG")


def test_png_renamed_tif_is_read_by_its_content(capsys, world, tmp_path):
    """Files are recognised by their signature, not their name: a PNG called .tif segments exactly like the TIFF."""
    from PIL import Image

    plane = tifffile.imread(world["plane"])
    Image.fromarray(plane).save(tmp_path / "renamed.tif", format="PNG")
    assert (tmp_path / "renamed.tif").read_bytes()[:4] == b"\x89PNG"
    rc, _, err = run_cli(capsys, "segment", world["model1"], tmp_path / "renamed.tif", world["plane"], "-o", tmp_path / "out")
    assert rc == 0, err
    a = tifffile.imread(tmp_path / "out" / "labels" / "renamed.tif")
    b = tifffile.imread(tmp_path / "out" / "labels" / f"{world['plane'].name.split('.')[0]}.tif")
    np.testing.assert_array_equal(a, b)
    assert_clean(tmp_path / "out")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_with_nan_or_inf(capsys, world, tmp_path, bad):
    data = tifffile.imread(world["plane"]).astype(np.float32)
    data[5, 7] = bad
    write_tif(tmp_path / "nonfinite.tif", data)
    segment_one(capsys, world, tmp_path / "nonfinite.tif", tmp_path, "NaN or infinite", "fix or mask")


def test_bool_image(capsys, world, tmp_path):
    write_tif(tmp_path / "mask.tif", tifffile.imread(world["plane"]) > 100)
    segment_one(capsys, world, tmp_path / "mask.tif", tmp_path, "binary", "raw microscope image")


def test_rgb_where_grayscale_expected(capsys, world, tmp_path):
    rng = np.random.default_rng(2)
    write_tif(tmp_path / "colour.tif", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    segment_one(capsys, world, tmp_path / "colour.tif", tmp_path, "colour (RGB)", "model expects 1")


def test_rgb_plane_in_experiment(capsys, world, exp, tmp_path):
    """In an experiment every plane must be grayscale; the colour plane's image set fails, the others finish."""
    plane = sorted((exp.parent / "images").glob("*_t00_z1_BF.tif"))[0]
    rng = np.random.default_rng(3)
    write_tif(plane, rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert_item_fails(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, plane.name, "grayscale")
    assert len(list((out / "labels").glob("*.tif"))) == 3


def test_zero_size_image(capsys, world, tmp_path):
    write_tif(tmp_path / "zero.tif", np.zeros((0, SIZE), np.uint16))
    segment_one(capsys, world, tmp_path / "zero.tif", tmp_path, "no pixels")


def test_one_pixel_image(capsys, world, tmp_path):
    write_tif(tmp_path / "pixel.tif", np.full((1, 1), 7, np.uint16))
    segment_one(capsys, world, tmp_path / "pixel.tif", tmp_path, "too small")


def test_channel_count_differs_from_model(capsys, world, tmp_path):
    stack = np.stack([tifffile.imread(world["plane"])] * 2)
    write_tif(tmp_path / "two.tif", stack)
    segment_one(capsys, world, tmp_path / "two.tif", tmp_path, "model expects 3", "model.json", model="model3")


@pytest.mark.parametrize("value", [0, 1000])
def test_empty_or_constant_image_gives_zero_cells(capsys, world, tmp_path, value):
    """An all-zero or constant image is no error: zero cells, an all-zero label file, the batch succeeds."""
    flat = write_tif(tmp_path / "flat.tif", np.full((SIZE, SIZE), value, np.uint16))
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "segment", world["model1"], flat, world["plane"], "-o", out)
    assert rc == 0 and stderr_lines(err) == []
    labels = read_labels(out / "labels" / "flat.tif")
    assert labels.shape == (SIZE, SIZE) and not labels.any()
    index = (out / "index.csv").read_text().splitlines()
    assert len(index) == 3 and any(line.startswith("flat,") and ",0," in line for line in index)
    assert not [line for line in (out / "cells.csv").read_text().splitlines()[1:] if line.startswith("flat,")]
    assert_clean(out)


def test_unsupported_pixel_type(capsys, world, tmp_path):
    write_tif(tmp_path / "complex.tif", np.ones((SIZE, SIZE), np.complex64))
    segment_one(capsys, world, tmp_path / "complex.tif", tmp_path, "pixel type", "integer or float")


def test_one_failure_does_not_stop_the_batch(capsys, world, tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    out = tmp_path / "out"
    assert_item_fails(capsys, ["segment", world["model1"], world["plane"], tmp_path / "empty.tif", "-o", out], out, "empty.tif")
    assert len(list((out / "labels").glob("*.tif"))) == 1
    assert json.loads((out / "run.json").read_text())["completed"] == 1


# --------------------------------------------------------------------------- experiments

def test_z_plane_missing_for_one_image_set(capsys, world, exp, tmp_path):
    gone = sorted((exp.parent / "images").glob("A01_s2_t00_z2_BF.tif"))[0]
    gone.unlink()
    out = tmp_path / "out"
    reason = assert_item_fails(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, "s2_t00", "z-planes")
    assert "A01_s2_t00_z0_BF.tif" in reason  # the files it has are named
    assert len(list((out / "labels").glob("*.tif"))) == 3


def test_image_sets_of_different_shapes(capsys, world, exp, tmp_path):
    """Image sets may differ in size (each is segmented alone); planes within one set may not."""
    images = exp.parent / "images"
    for path in images.glob("A01_s2_t00_z*_BF.tif"):
        tifffile.imwrite(path, tifffile.imread(path)[:48, :40])
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "segment", world["model3"], "--experiment", exp, "-o", out)
    assert rc == 0, err
    assert tifffile.imread(out / "labels" / "A01_s2_t00.tif").shape == (48, 40)
    assert tifffile.imread(out / "labels" / "A01_s1_t00.tif").shape == (SIZE, SIZE)
    bad = images / "A01_s1_t01_z1_BF.tif"
    tifffile.imwrite(bad, tifffile.imread(bad)[:50])
    out2 = tmp_path / "out2"
    assert_item_fails(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out2], out2, bad.name, "equally sized")


def test_groundtruth_plate_illumination_with_different_shapes(capsys, exp, tmp_path):
    """One plate illumination function needs equally sized images: a clean error, not a numpy broadcast error."""
    text = exp.read_text() + '\n[groundtruth]\nillumination = "plate"\n'
    exp.write_text(text)
    for path in (exp.parent / "images").glob("A01_s2_t01_*.tif"):
        tifffile.imwrite(path, tifffile.imread(path)[:48, :40])
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["groundtruth", exp, "-o", out], out, "A01_s2_t01", "illumination")


def _replace_in(toml: Path, old: str, new: str) -> None:
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))


def test_toml_syntax_error(capsys, world, exp, tmp_path):
    _replace_in(exp, 'objects = "cells"', 'objects = "cells')
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, str(exp), "TOML syntax error", "line")
    assert_fails_cleanly(capsys, ["groundtruth", exp, "-o", out], out, "experiment.toml", "TOML syntax error")


def test_toml_unknown_key(capsys, world, exp, tmp_path):
    _replace_in(exp, 'objects = "cells"', 'objects = "cells"\nobjcts = "nuclei"')
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, "experiment.toml", "unknown key 'objcts'", "did you mean 'objects'")


def test_toml_regex_matches_nothing(capsys, world, exp, tmp_path):
    _replace_in(exp, r"\.tif'", r"\.png'")
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, "experiment.toml", "matches no image file", "fix 'pattern'")
    assert_fails_cleanly(capsys, ["groundtruth", exp, "-o", out], out, "experiment.toml", "matches no image file")


def test_toml_regex_without_named_groups(capsys, world, exp, tmp_path):
    text = exp.read_text()
    start = text.index("pattern")
    end = text.index("\n", start)
    exp.write_text(text[:start] + r"pattern = '([A-P]\d{2})_s(\d+)_.*\.tif'" + text[end:])
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", world["model3"], "--experiment", exp, "-o", out], out, "experiment.toml", "(?P<channel>...)")


def test_toml_invalid_regex(capsys, world, exp, tmp_path):
    _replace_in(exp, "(?P<well>", "(?P<well")
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["groundtruth", exp, "-o", out], out, "experiment.toml", "not a valid regular expression")


def test_experiment_file_missing(capsys, world, tmp_path):
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["groundtruth", tmp_path / "nope.toml", "-o", out], out, "nope.toml", "not found")


# --------------------------------------------------------------------------- output folder and model folder

def test_output_folder_is_a_file(capsys, world, tmp_path):
    (tmp_path / "taken").write_text("x")
    out = tmp_path / "taken" / "out"
    assert_fails_cleanly(capsys, ["segment", world["model1"], world["plane"], "-o", out], out, "taken", "writable -o folder")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into read-only folders")
def test_output_folder_not_writable(capsys, world, tmp_path):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert_fails_cleanly(capsys, ["segment", world["model1"], world["plane"], "-o", out], out, "readonly", "writable")
    finally:
        out.chmod(0o755)


@pytest.fixture
def model_copy(world, tmp_path) -> Path:
    return Path(shutil.copytree(world["model1"], tmp_path / "model"))


def test_model_folder_missing(capsys, world, tmp_path):
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", tmp_path / "no-model", world["plane"], "-o", out], out, "no-model", "stainseg train")
    assert not out.exists()


def test_model_weights_missing(capsys, world, model_copy, tmp_path):
    (model_copy / "model.pt").unlink()
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", model_copy, world["plane"], "-o", out], out, "model.pt", "is missing", "stainseg train")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_model_weights_corrupt(capsys, world, model_copy, tmp_path, damage):
    weights = model_copy / "model.pt"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", model_copy, world["plane"], "-o", out], out, "model.pt", "corrupt", "stainseg train")


def test_model_weights_of_another_architecture(capsys, world, model_copy, tmp_path):
    shutil.copy(world["model3"] / "model.pt", model_copy / "model.pt")
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", model_copy, world["plane"], "-o", out], out, "model.pt", "do not match model.json")


def test_model_json_corrupt(capsys, world, model_copy, tmp_path):
    (model_copy / "model.json").write_text('{"in_channels": 1, ')
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", model_copy, world["plane"], "-o", out], out, "model.json", "corrupt")


def _as_version_01(folder: Path) -> None:
    """Rewrite a model folder as stainseg 0.1 wrote it: model.json format 1 plus a config.toml (here without a nuclei channel)."""
    import json

    meta = json.loads((folder / "model.json").read_text())
    old = {"format_version": 1, "input_channels": meta["input_channels"], "in_channels": meta["in_channels"], "axis_order": "CYX",
           "normalization": "stainseg.preprocess.normalize", "head": meta["network"]["head"], "n_classes": meta["n_classes"],
           "objects": meta["objects"], "tile_size": meta["segment"]["tile_size"], "dilation": 3, "threshold": 0.5, "training": {}}
    (folder / "model.json").write_text(json.dumps(old))
    net = meta["network"]
    (folder / "config.toml").write_text(
        f'name = "old"\nroot = "/nowhere"\npattern = ""\nobjects = "{meta["objects"]}"\n[channels]\ninput = ["BF"]\n'
        f'[groundtruth]\nillumination = "none"\n[model]\nin_channels = {net["in_channels"]}\nbase_width = {net["base_width"]}\n'
        f'depth = {net["depth"]}\nresidual_blocks = {net["residual_blocks"]}\nhead = "{net["head"]}"\n'
        f'[segment]\ntile_size = {meta["segment"]["tile_size"]}\ndevice = "cpu"\n')


def test_model_folder_of_version_01_loads_and_segments_like_this_version(world, model_copy):
    from stainseg.model import Model

    image = read_image(world["plane"])
    new = Model.load(model_copy)
    new.preprocessing.normalization = "image"  # what 0.1 did
    expected = new.segment(image)
    _as_version_01(model_copy)
    old = Model.load(model_copy)  # its config.toml names no nuclei channel: not an experiment, and not needed
    assert old.preprocessing.normalization == "image" and old.dilation == 3
    np.testing.assert_array_equal(old.segment(image), expected)


def test_model_config_of_version_01_corrupt(capsys, world, model_copy, tmp_path):
    _as_version_01(model_copy)
    (model_copy / "config.toml").write_text("root = [")
    out = tmp_path / "out"
    assert_fails_cleanly(capsys, ["segment", model_copy, world["plane"], "-o", out], out, "config.toml", "stainseg train")


def test_debug_shows_the_traceback(world, tmp_path):
    """--debug lets the exception through (a traceback for a bug report) instead of the one-line message."""
    from stainseg.errors import StainsegError

    with pytest.raises(StainsegError, match="model folder not found"):
        main(["--debug", "segment", str(tmp_path / "no-model"), str(world["plane"]), "-o", str(tmp_path / "out")])


# --------------------------------------------------------------------------- many objects

def test_more_than_65535_objects(capsys, tmp_path):
    """Label images beyond uint16 are stored as uint32 and evaluated without overflow."""
    side = 600  # 300 x 300 objects of 2 x 2 pixels = 90 000 labels
    labels = (np.arange(side // 2)[:, None] * (side // 2) + np.arange(side // 2)[None, :] + 1)
    labels = np.kron(labels, np.ones((2, 2), dtype=np.int64))
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    write_labels(tmp_path / "truth" / "many.tif", labels)
    write_labels(tmp_path / "pred" / "many.tif", labels)
    back = read_labels(tmp_path / "truth" / "many.tif")
    assert back.dtype == np.uint32 and int(back.max()) == 90_000
    np.testing.assert_array_equal(back, labels)
    rc, stdout, err = run_cli(capsys, "evaluate", "--truth", tmp_path / "truth", "--pred", tmp_path / "pred", "-o", tmp_path / "eval")
    assert rc == 0, err
    assert "90000 objects" in stdout and "F1@IoU0.5 = 1.000" in stdout
    assert_clean(tmp_path / "eval")


def test_label_png_with_more_than_65535_objects(tmp_path):
    """A colour-coded PNG mask (BBBC039 style) with more than 65 535 objects becomes uint32 labels."""
    from PIL import Image

    side = 780  # 2 x 2 objects on a 3-pixel grid: 260 x 260 = 67 600 objects
    yy, xx = np.mgrid[:side, :side]
    colour = ((yy % 3 < 2) & (xx % 3 < 2)).astype(np.uint8) * 200
    rgb = np.stack([colour, colour, colour], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    labels = read_labels(tmp_path / "mask.png")
    assert labels.dtype == np.uint32 and int(labels.max()) == 67_600
