"""`stainseg run` end to end on a small synthetic experiment; resume after a kill; the report in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stainseg.cli import main
from stainseg.io.atomic import read_csv
from stainseg.stages.pipeline import demo_config, run_demo, run_experiment
from stainseg.synth import generate_experiment


def _add_blank_site(folder: Path, site: int = 4, seed: int = 5) -> None:
    """An empty well beside the real sites: every plane of site 1 replaced by its flat level plus camera noise."""
    import tifffile

    rng = np.random.default_rng(seed)
    for src in sorted((folder / "images").glob("A01_s1_*.tif")):
        plane = tifffile.imread(src)
        level = float(np.median(plane))
        noise = rng.normal(level, 0.02 * max(level, 1.0), plane.shape)
        tifffile.imwrite(folder / "images" / src.name.replace("_s1_", f"_s{site}_"),
                         np.clip(noise, 0, np.iinfo(plane.dtype).max).astype(plane.dtype))


def _small_config(folder: Path):
    generate_experiment(folder, wells=1, sites=2, times=3, size=192, seed=2)
    _add_blank_site(folder)
    cfg = demo_config(folder)
    cfg.train.iterations = 30
    cfg.train.checkpoint_every = 10
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("run")
    cfg = _small_config(base / "experiment")
    run_experiment(cfg, base / "out")
    return base / "out"


def test_every_stage_wrote_its_outputs(run_dir: Path) -> None:
    for stage in ("groundtruth", "model", "segmentation", "evaluation", "tracking"):
        assert (run_dir / stage / "DONE.json").exists(), stage
    assert len(list((run_dir / "segmentation" / "labels").glob("*.tif"))) == 9  # 3 sites (one blank) x 3 time points
    cells = read_csv(run_dir / "segmentation" / "cells.csv")
    assert cells and {"track_id", "endpoint_label", "area"} <= set(cells[0])  # uncertainty only with tiling = "tiles"
    tracks = read_csv(run_dir / "tracking" / "tracks.csv")
    assert {"well", "site", "time", "label", "track_id", "parent_track_id", "endpoint_label"} <= set(tracks[0])
    record = json.loads((run_dir / "run.json").read_text())
    assert {"config", "versions", "timings_s", "figures"} <= set(record)
    assert "mangt % F>=0.6" in record["figures"] and "tracking link accuracy" in record["figures"]
    assert (run_dir / "evaluation" / "mangt" / "metrics.json").exists()


def test_report_is_self_contained(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 and "data:image/gif;base64," in page
    assert 'src="http' not in page and "src='http" not in page
    for heading in ("What was run", "quality control", "Training", "Accuracy on held-out sites", "Following cells"):
        assert heading in page


def test_blank_field_is_flagged_first_with_its_reason(run_dir: Path) -> None:
    """The empty well gives no cells and the report lists it before everything else, with the reason in words."""
    index = {r["name"]: r for r in read_csv(run_dir / "segmentation" / "index.csv")}
    blank = [n for n in index if "_s4_" in n]
    assert len(blank) == 3 and all(int(index[n]["cells"]) == 0 and "blank" in index[n]["flags"] for n in blank)
    assert not any(index[n]["flags"] for n in index if "_s4_" not in n and "blank" in index[n]["flags"])
    page = (run_dir / "report.html").read_text()
    body = page[page.index("<body>"):]
    first_h2 = body.index("<h2")
    assert body[first_h2:].startswith('<h2 id="flagged">Flagged images (')
    flagged = body[first_h2:body.index("<h2", first_h2 + 3)]
    for name in blank:
        assert name in flagged
    assert "no signal above the camera noise" in flagged and "x the noise" in flagged  # meaning and the measured number
    assert flagged.count("data:image/png;base64,") >= 3  # a thumbnail per flagged image
    # the result comes next, before any table: a held-out image that is not blank, whole and in full-resolution crops
    result = body[body.index("<h2>Result</h2>"):body.index("<h2>What was run</h2>")]
    assert body.index("<h2>Result</h2>") < body.index("<table")
    assert "held-out image" in result and "_s4_" not in result.split("</p>")[0]
    assert result.count("data:image/png;base64,") >= 3 and "pixel for pixel" in result
    # the images table lists the flagged images first
    table = body[body.index("<h2>Segmented images</h2>"):]
    rows = table.split("<tr")[2:]
    assert all("_s4_" in r for r in rows[:3]) and not any("_s4_" in r for r in rows[3:])


def test_rerun_skips_complete_stages(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "out"
    shutil.copytree(run_dir, copy)
    before = (copy / "model" / "model.pt").read_bytes()
    stamps = {stage: (copy / stage / "DONE.json").stat().st_mtime_ns for stage in ("groundtruth", "model")}
    labels_before = {p.name: p.read_bytes() for p in (copy / "segmentation" / "labels").glob("*.tif")}
    shutil.rmtree(copy / "tracking")  # as if killed during tracking
    (copy / "segmentation" / "DONE.json").unlink()  # ... and segmentation had not been marked done
    cfg = demo_config(run_dir.parent / "experiment")
    cfg.train.iterations = 30
    cfg.train.checkpoint_every = 10
    result = run_experiment(cfg, copy)
    assert (copy / "model" / "model.pt").read_bytes() == before
    for stage, stamp in stamps.items():  # complete stages were not redone
        assert (copy / stage / "DONE.json").stat().st_mtime_ns == stamp, stage
    assert result.timings["model"] == json.loads((copy / "model" / "DONE.json").read_text())["seconds"]
    # segmentation resumed (same model): identical labels; later stages were redone after it
    assert {p.name: p.read_bytes() for p in (copy / "segmentation" / "labels").glob("*.tif")} == labels_before
    assert (copy / "tracking" / "DONE.json").exists()
    assert result.figures["tracking link accuracy"] == pytest.approx(json.loads((run_dir / "run.json").read_text())["figures"]["tracking link accuracy"])


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script>"""


def test_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium)")
    page = tmp_path / "report.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="' in dom
    ok, total = dom.split('data-images="')[1].split('"')[0].split("/")
    assert int(total) >= 7 and ok == total, f"{ok} of {total} figures rendered"
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", (run_dir / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 60  # plot lines, label outlines: not grey text
    assert pixels.shape[0] >= 2000 and colourful.mean() > 0.002


def test_cli_run_bad_experiment(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.toml").write_text("root = 'nowhere'\npattern = '(?P<channel>a)'\n[channels]\ninput=['a']\nnuclei='a'\n")
    assert main(["run", str(tmp_path / "x.toml"), "-o", str(tmp_path / "o")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_both_parts_and_reports_them(tmp_path: Path) -> None:
    """`stainseg demo` as shipped: the real section on the bundled crop and the synthetic time-lapse, in one report."""
    result = run_demo(tmp_path / "demo")
    real = json.loads((tmp_path / "demo" / "real" / "result.json").read_text())
    assert real["input_planes"] == ["phase_z02", "phase_z06", "phase_z10"]
    assert 15 <= real["train_objects"] <= 40 and 10 <= real["test_objects"] <= 30  # DAPI nuclei of each part
    assert 1 <= real["iterations"] <= 150 and real["predicted_objects"] >= 0  # a short training may find none (README, "Demo")
    assert 0.0 <= real["scores"]["percent_f_above"] <= 100.0
    from stainseg.io.images import read_labels

    assert read_labels(tmp_path / "demo" / "real" / "network_labels.tif").shape == (384, 256)
    record = json.loads((tmp_path / "demo" / "run.json").read_text())
    assert "real: F1@IoU0.5 vs DAPI labels" in record["figures"] and "real" in record["stages"]
    assert "mangt % F>=0.6" in result.figures and "real section" in result.timings
    page = (tmp_path / "demo" / "report.html").read_text()
    assert page.index("<h2>Result</h2>") < page.index("Real phase contrast (bundled sample)") < page.index("What was run")
    assert sum(result.timings.values()) < 300  # under 3 minutes on an idle 2-core machine; this bound allows a busy one
