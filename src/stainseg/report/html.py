"""OUT/report.html: one self-contained page (images embedded) that a biologist can read without running anything."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from stainseg.config import ExperimentConfig
from stainseg.io.atomic import read_csv, write_text
from stainseg.io.images import read_labels
from stainseg.io.layout import ImageSet, is_test, scan, value_key
from stainseg.report import figures

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4}tr.excluded td{background:#fde2e2}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:4px 0}.fig{display:inline-block;vertical-align:top;margin-right:1em}
.big{font-size:1.25em;font-weight:600}.note{color:#666;font-size:.9em}
td.reason{text-align:left;min-width:24em;font-size:.9em}.prev img{width:330px}
.flag{display:flex;gap:1em;align-items:flex-start;border:1px solid #e8b4b4;background:#fff6f6;padding:.5em;margin:.5em 0}
.flag ul{margin:.3em 0;padding-left:1.2em}.flag li{margin:.2em 0}.thumb{flex:none}.thumb img{width:160px;image-rendering:pixelated}
"""


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def _img_file(path: Path, alt: str) -> str:
    if not path.exists():
        return f'<p class="note">({html.escape(alt)}: not available)</p>'
    return _img(path.read_bytes(), alt)


def _table(rows: list[dict[str, Any]], columns: list[str], row_class: Any = None, limit: int = 60) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for r in rows[:limit]:
        cls = row_class(r) if row_class else ""
        cells = "".join(f'<td class="{"reason" if c == "reason" else "l" if i == 0 else ""}">{html.escape(_fmt(r.get(c, "")))}</td>' for i, c in enumerate(columns))
        body.append(f'<tr class="{cls}">{cells}</tr>')
    more = f'<p class="note">… {len(rows) - limit} more rows in the CSV</p>' if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _fmt(value: Any) -> str:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if str(value).isdigit():
        return str(value)
    return f"{f:.3g}" if abs(f) < 1000 else f"{f:.0f}"


def _dilation_text(cfg: ExperimentConfig, out: Path) -> str:
    """The dilation the segmentation used: the model's (calibrated) one when there is a model."""
    metas = sorted((out / "model").glob("**/model.json"))
    if not metas:
        return f"{cfg.dilation()} × {cfg.dilation()}"
    values = sorted({int(json.loads(m.read_text()).get("dilation", cfg.dilation())) for m in metas})
    calibrated = any("dilation_calibration" in json.loads(m.read_text()) for m in metas)
    return ", ".join(f"{d} × {d}" for d in values) + (" (calibrated on validation images)" if calibrated else "")


def _run_section(cfg: ExperimentConfig, figures_: dict[str, Any], timings: dict[str, float], out: Path) -> str:
    rows = [("experiment", cfg.name or cfg.source), ("objects", cfg.objects), ("network input", ", ".join(cfg.channels.input)),
            ("labels from", ", ".join(c for c in (cfg.channels.nuclei, cfg.channels.cytoplasm if cfg.objects == "cells" else None) if c)),
            ("held-out", ", ".join(filter(None, [f"sites {cfg.split.test_sites}" if cfg.split.test_sites else "",
                                                 f"wells {cfg.split.test_wells}" if cfg.split.test_wells else "",
                                                 f"{cfg.split.test_fraction:.0%} at random" if cfg.split.test_fraction else ""])) or "none"),
            ("training preset", cfg.train.preset), ("dilation after segmentation", _dilation_text(cfg, out))]
    rows += [(f"time: {k}", f"{v:.1f} s") for k, v in timings.items()]
    table = "".join(f'<tr><th class="l">{html.escape(str(k))}</th><td class="l">{html.escape(str(v))}</td></tr>' for k, v in rows)
    figs = "".join(f'<tr><th class="l">{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>' for k, v in figures_.items())
    return f"<h2>What was run</h2><table>{table}</table><h2>Headline figures</h2><table>{figs}</table>" \
           '<p class="note">% F&ge;0.6: share of reference cells whose best-matching segmented cell has Dice (the paper\'s F-score) ' \
           "of at least 0.6 (paper, Fig. 2). F1@IoU0.5: one-to-one matching at IoU &ge; 0.5 (as in Cellpose / StarDist papers). " \
           "cpgt = against automatic labels of held-out sites; mangt = against manual / true labels.</p>"


def _qc_section(out: Path) -> str:
    qc_path = out / "groundtruth" / "qc.csv"
    if not qc_path.exists():
        return ""
    rows = read_csv(qc_path)
    cols = list(rows[0]) if rows else []
    excluded = [r for r in rows if r.get("exclude") == "True"]
    previews = sorted((out / "groundtruth" / "previews").glob("*.png"))[:3]
    pics = "".join(f'<div class="fig prev">{_img_file(p, p.stem)}<br><span class="note">{html.escape(p.stem)}</span></div>' for p in previews)
    return ("<h2>Automatic labels and their quality control</h2>"
            f"<p>{len(rows)} end-point image sets labelled from the stains; <b>{len(excluded)}</b> excluded from training by QC "
            "(outside median &plusmn; MADs of the plate; reason in the last column).</p>"
            + _table(excluded + [r for r in rows if r.get("exclude") != "True"] if len(rows) <= 20 else excluded + [r for r in rows if r.get("exclude") != "True"][:10],
                     cols, row_class=lambda r: "excluded" if r.get("exclude") == "True" else "")
            + ('<p class="note">Excluded image sets first; all rows are in <code>groundtruth/qc.csv</code>.</p>' if len(rows) > 20 else "")
            + f"<p>Outlines of the automatic labels over the stain:</p>{pics}")


def _training_section(out: Path) -> str:
    pics = sorted((out / "model").glob("**/history.png"))
    if not pics:
        return ""
    parts = []
    for p in pics:
        summary = p.parent / "summary.txt"
        head = "\n".join(summary.read_text().splitlines()[:6]) if summary.exists() else ""
        text = f"<pre class='note'>{html.escape(head)}</pre>" if head else ""
        parts.append(f'<div class="fig">{_img_file(p, "training curves")}{text}</div>')
    return "<h2>Training</h2><p>Loss and validation score during training (model directory: <code>model/</code>).</p>" + "".join(parts)


def _evaluation_section(out: Path) -> str:
    from stainseg.evaluate.plots import plot_ap_iou, plot_fscore_curves

    ev = out / "evaluation"
    kinds = [k for k in ("cpgt", "mangt", "auto_vs_mangt") if (ev / k / "metrics.json").exists()]
    if not kinds:
        return ""
    curves, sweeps, rows = {}, {}, []
    for k in kinds:
        metrics = json.loads((ev / k / "metrics.json").read_text())
        per_obj = read_csv(ev / k / "per_object.csv")
        name = {"auto_vs_mangt": "automatic labels vs manual"}.get(k, f"network vs {k}")
        curves[name] = np.array([float(r["fscore"]) for r in per_obj])
        sweeps[name] = metrics["overall"]["iou_sweep"]
        o = metrics["overall"]
        pi = o.get("per_image_percent_f_above") or {}
        rows.append({"comparison": name, "images": metrics["n_images"], "objects": o["n_truth"], "% F>=0.6": o["percent_f_above"],
                     "per-image min": pi.get("min"), "median": pi.get("median"), "max": pi.get("max"),
                     "F1@IoU0.5": o["f1"], "precision": o["precision"], "recall": o["recall"], "mean AP 0.5:0.95": o["mean_ap"]})
    tmp = ev / "combined"
    curve_png = plot_fscore_curves(curves, tmp / "fscore_curves.png", title="% of cells with F-score ≥ t (paper Fig. 2)")
    ap_png = plot_ap_iou(sweeps, tmp / "ap_iou.png", title="AP and F1 against the IoU threshold")
    # box plots only where a site / well has several images (a box of one value says nothing)
    with_boxes = [k for k in kinds if _largest_group(ev / k / "metrics.json") >= 2]
    boxes = "".join(f'<div class="fig">{_img_file(ev / k / "boxplot.png", k + " box plot")}</div>' for k in with_boxes)
    return ("<h2>Accuracy on held-out sites</h2>" + _table(rows, list(rows[0]))
            + f'<div class="fig">{_img_file(curve_png, "F-score curves")}</div><div class="fig">{_img_file(ap_png, "AP over IoU")}</div>'
            + ("<p>Per-image distribution (box plots over the images of each site / well):</p>" + boxes if boxes else ""))


def _largest_group(metrics_json: Path) -> int:
    """Images in the largest site / well group of an evaluation (0 when unknown)."""
    groups = json.loads(metrics_json.read_text()).get("groups") or {}
    return max((int(g.get("n_images", 0)) for g in groups.values()), default=0)


def _index_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "segmentation" / "index.csv"
    return read_csv(path) if path.exists() else []


def _is_flagged(row: dict[str, Any]) -> bool:
    return bool(str(row.get("flags") or "").strip())


def _input_plane(name: str, row: dict[str, Any] | None, cfg: ExperimentConfig, sets: dict[str, ImageSet]) -> np.ndarray | None:
    """The middle plane of the first input channel of an image set (or of the files it was segmented from)."""
    if name in sets:
        image = sets[name].load(cfg.channels.input[0])
        return image[len(image) // 2]
    sources = [p for p in str((row or {}).get("sources") or "").split(";") if p]
    if not sources:
        return None
    from stainseg.io.images import read_image

    plane = np.squeeze(read_image(sources[len(sources) // 2]))
    return plane if plane.ndim == 2 else plane[len(plane) // 2]


def _lead_section(out: Path, cfg: ExperimentConfig, sets: dict[str, ImageSet]) -> str:
    """The result first: one held-out image with the outlines, whole and in full-resolution crops."""
    index = _index_rows(out)
    if not index:
        return ""
    rows = {r["name"]: r for r in index}
    test = [r for r in index if r["name"] in sets and is_test(cfg, sets[r["name"]])] or index
    good = [r for r in test if not _is_flagged(r) and int(r.get("cells") or 0) > 0] or test
    row = sorted(good, key=lambda r: int(r.get("cells") or 0))[len(good) // 2]  # a typical image: the median count
    plane = _input_plane(row["name"], rows[row["name"]], cfg, sets)
    if plane is None:
        return ""
    labels = read_labels(out / "segmentation" / "labels" / f"{row['name']}.tif")
    held = "held-out " if row["name"] in sets and is_test(cfg, sets[row["name"]]) else ""
    n = len(np.unique(labels[labels > 0]))
    title = (f"{held}image <b>{html.escape(row['name'])}</b>: {n} objects, outlines in yellow over the "
             f"label-free input ({html.escape(cfg.channels.input[0])}, middle plane)")
    return "<h2>Result</h2>" + _views_html(plane, labels, None, title)


def _views_html(plane: np.ndarray, labels: np.ndarray, reference: np.ndarray | None, title: str) -> str:
    # crops of 128 px enlarged 2x; on small images (the whole view is already shown 2x) smaller crops enlarged 3x
    crop, zoom = (128, 2) if min(plane.shape) >= 384 else (max(48, min(plane.shape) // 3), 3)
    whole, crops = figures.result_views(plane, labels, reference, crop=crop, zoom=zoom)
    factor = max([f for f in range(1, zoom + 1) if max(plane.shape) * f <= 1000] or [1])
    scale = "" if factor == 1 else f" (enlarged {factor}&times;, pixel for pixel)"
    parts = [f'<p>{title}.</p><div class="fig">{_img(whole, "whole view with outlines")}<br>'
             f'<span class="note">whole view{scale}; magenta boxes: the crops</span></div>']
    for i, (png, (y, x)) in enumerate(crops, 1):
        parts.append(f'<div class="fig">{_img(png, f"crop {i}")}<br><span class="note">crop {i}: y {y}, x {x}, {crop} px '
                     f"enlarged {zoom}&times; pixel for pixel</span></div>")
    return "".join(parts)


def _flag_items(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, reason in words) of each flag of an index.csv row; a code found in several channels is listed once.

    Example
    -------
    >>> _flag_items({"flags": "blank;blank", "flag_reasons": "blank: channel 0 is 2.7 x the noise | blank: channel 2 is 2.6 x the noise"})[0][1]
    'no signal above the camera noise (empty well, noise-only or constant frame). Measured: channel 0 is 2.7 x the noise; channel 2 is 2.6 x the noise'
    """
    from stainseg.quality import FLAG_MEANINGS

    codes = [c for c in str(row.get("flags") or "").split(";") if c]
    reasons = [r.strip() for r in str(row.get("flag_reasons") or "").split(" | ")]
    measured: dict[str, list[str]] = {}
    for i, code in enumerate(codes):
        text = reasons[i] if i < len(reasons) else ""
        text = text[len(code) + 1:].strip() if text.startswith(code + ":") else text
        measured.setdefault(code, [])
        if text:
            measured[code].append(text)
    items = []
    for code, texts in measured.items():
        meaning = FLAG_MEANINGS.get(code, "")
        numbers = "; ".join(texts)
        items.append((code, f"{meaning}. Measured: {numbers}" if meaning and numbers else meaning or numbers))
    return items


def _flagged_section(out: Path, cfg: ExperimentConfig, sets: dict[str, ImageSet], limit: int = 24) -> str:
    """Images the quality checks flagged, each with a thumbnail and every flag's reason in words."""
    index = _index_rows(out)
    flagged = [r for r in index if _is_flagged(r)]
    if not flagged:
        return ""
    cards = []
    for r in flagged[:limit]:
        plane = _input_plane(r["name"], r, cfg, sets)
        label_path = out / "segmentation" / "labels" / f"{r['name']}.tif"
        if plane is not None and label_path.exists():
            thumb = _img(figures.thumbnail(plane, read_labels(label_path)), f"{r['name']} thumbnail")
        else:
            thumb = '<p class="note">(no picture)</p>'
        skipped = " It was <b>not segmented</b> (skip flagged images was asked)." if str(r.get("skipped")) == "True" else ""
        reasons = "".join(f"<li><b>{html.escape(code)}</b>: {html.escape(text)}</li>" for code, text in _flag_items(r))
        cards.append(f'<div class="flag"><div class="thumb">{thumb}</div><div><b>{html.escape(r["name"])}</b>: '
                     f"{int(r.get('cells') or 0)} objects.{skipped}<ul>{reasons}</ul></div></div>")
    more = f'<p class="note">… {len(flagged) - limit} more flagged images in <code>segmentation/index.csv</code></p>' if len(flagged) > limit else ""
    return (f'<h2 id="flagged">Flagged images ({len(flagged)} of {len(index)})</h2>'
            "<p>The quality checks found these images unlike the training images; check their results before trusting "
            "them (columns <code>flags</code> and <code>flag_reasons</code> of <code>segmentation/index.csv</code>).</p>"
            + "".join(cards) + more)


def _segmentation_section(out: Path, cfg: ExperimentConfig, sets: dict[str, ImageSet]) -> str:
    index = _index_rows(out)
    if not index:
        return ""
    ordered = [r for r in index if _is_flagged(r)] + [r for r in index if not _is_flagged(r)]
    rows = [{"image": r["name"], "cells": r.get("cells", ""), "held out": "yes" if r["name"] in sets and is_test(cfg, sets[r["name"]]) else "",
             "flags": str(r.get("flags") or "").replace(";", ", "), "skipped": "yes" if str(r.get("skipped")) == "True" else ""}
            for r in ordered]
    return (f"<h2>Segmented images</h2><p>{len(index)} images segmented, "
            f"{sum(int(r['cells']) for r in index)} cells (table: <code>segmentation/cells.csv</code>); flagged images first.</p>"
            + _table(rows, list(rows[0]), row_class=lambda r: "excluded" if r["flags"] else "", limit=40))


def _real_section(out: Path) -> str:
    """The demo's real part (OUT/real): phase contrast with the network's and the DAPI labels' outlines."""
    folder = out / "real"
    if not (folder / "result.json").exists():
        return ""
    from stainseg.io.images import read_image

    rec = json.loads((folder / "result.json").read_text())
    phase = np.asarray(read_image(folder / "phase.tif"))
    dapi = read_labels(folder / "dapi_labels.tif")
    net = read_labels(folder / "network_labels.tif")
    (y0, y1), (x0, x1) = rec["test_part"]
    rows = rec.get("split") == "rows"
    part = f"rows {y0}–{y1}" if rows else f"columns {x0}–{x1}"
    plane = phase[len(phase) // 2][y0:y1, x0:x1]
    sc = rec["scores"]
    title = (f"held-out part ({part}) over the middle input plane ({html.escape(rec['input_planes'][len(rec['input_planes']) // 2])}): "
             f"the network's {rec['predicted_objects']} objects in <b style='color:#c90'>yellow</b>; the {rec['test_objects']} nuclei of the "
             "automatic labels from DAPI, which it is scored against, in <b style='color:#08c'>cyan</b>")
    from skimage.segmentation import relabel_sequential

    truth = relabel_sequential(dapi[y0:y1, x0:x1])[0]
    training = np.ones(dapi.shape, bool)
    training[y0:y1, x0:x1] = False
    whole = figures.outline_view(phase[len(phase) // 2], np.zeros_like(dapi), reference=np.where(training, dapi, 0))
    if rows:
        whole[y0, :] = (1.0, 0.25, 1.0)
    else:
        whole[:, x0] = (1.0, 0.25, 1.0)
    split = _img(figures._png(whole), "training and held-out parts")
    return ("<h2>Real phase contrast (bundled sample)</h2>"
            f"<p>{html.escape(rec['crop'])}: a phase-contrast z-stack of primary rodent cortical culture and its DAPI stain "
            f"({html.escape(rec['data'])}). Nuclei labels come from DAPI only; a network learned them from "
            f"{len(rec['input_planes'])} phase planes ({html.escape(', '.join(rec['input_planes']))}) on the training part "
            f"({rec['train_objects']} nuclei, {rec['iterations']} iterations, {rec['seconds']['train']:.0f} s) and segmented the "
            f"held-out part. Against the DAPI labels there: <span class='big'>{sc['percent_f_above']:.1f} %</span> of nuclei with "
            f"F &ge; 0.6, F1@IoU0.5 <span class='big'>{sc['f1']:.2f}</span> ({sc['n_pred']} objects for {sc['n_truth']} nuclei). "
            "A short training on one small field: a demonstration of the path, not of the method's accuracy.</p>"
            + _views_html(plane, net, truth, title)
            + f'<div class="fig">{split}<br><span class="note">the whole crop: DAPI label outlines (cyan) on the training part, '
              "left of the magenta line; the held-out part right of it</span></div>")


def _tracking_section(out: Path, cfg: ExperimentConfig, sets: dict[str, ImageSet]) -> str:
    tracks_csv = out / "tracking" / "tracks.csv"
    if not tracks_csv.exists():
        return ""
    tracks = read_csv(tracks_csv)
    if not tracks:
        return ""
    done = json.loads((out / "tracking" / "DONE.json").read_text()) if (out / "tracking" / "DONE.json").exists() else {}
    by_image: dict[str, dict[int, str]] = {}
    for r in tracks:
        by_image.setdefault(r["image"], {})[int(r["label"])] = r["track_id"]
    # the animation: the first held-out position, in time order
    pos_of = {n: tuple((k, v) for k, v in sets[n].fields.items() if k != "time") for n in by_image if n in sets}
    positions = sorted(set(pos_of.values()))
    held = [p for p in positions if any(is_test(cfg, sets[n]) for n in by_image if pos_of.get(n) == p)]
    pos = (held or positions)[0]
    names = sorted((n for n in by_image if pos_of.get(n) == pos), key=lambda n: value_key(sets[n].fields["time"]))
    frames = [sets[n].load(cfg.channels.input[0])[len(sets[n].files(cfg.channels.input[0])) // 2] for n in names]
    labels = [read_labels(out / "segmentation" / "labels" / f"{n}.tif") for n in names]
    gif = figures.track_animation(frames, labels, [by_image[n] for n in names], out / "tracking" / "animation.gif")
    # counts over time per well
    series: dict[str, dict[float, int]] = {}
    for r in read_csv(out / "segmentation" / "index.csv"):
        if r["name"] in sets and "time" in sets[r["name"]].fields:
            f = sets[r["name"]].fields
            per = series.setdefault(f.get("well", "all"), {})
            per[float(f["time"])] = per.get(float(f["time"]), 0) + int(r["cells"])
    counts = figures.counts_over_time({w: (sorted(d), [d[t] for t in sorted(d)]) for w, d in series.items()})
    acc = done.get("link_accuracy")
    acc_text = f" Tracking link accuracy against the true tracks: <span class='big'>{acc:.1%}</span>." if isinstance(acc, float) else ""
    return (f"<h2>Following cells through the time-lapse</h2><p>{done.get('tracks', '?')} tracks, {done.get('divisions', '?')} "
            f"from divisions; each cell carries the label of the stained end-point cell it becomes (<code>tracking/tracks.csv</code>).{acc_text}</p>"
            f'<div class="fig">{_img(gif, "tracked time-lapse", "image/gif")}<br><span class="note">{html.escape(" ".join(v for _, v in pos))}: '
            f"outlines coloured and numbered by track</span></div><div class=\"fig\">{_img(counts, 'cell counts over time')}</div>")


def write_report(out: str | Path, cfg: ExperimentConfig, figures_: dict[str, Any], timings: dict[str, float]) -> Path:
    """Assemble OUT/report.html from the outputs of the run's stages (sections missing outputs are left out)."""
    out = Path(out)
    sets = {s.name: s for s in scan(cfg).image_sets}
    body = [f"<h1>stainseg report: {html.escape(cfg.name or Path(cfg.source or 'experiment').stem)}</h1>",
            '<p class="note">Cells segmented in label-free images by a network trained only on labels made automatically from '
            "end-point stains (Sadanandan et al., Sci. Rep. 2017). Every figure below was computed by this run.</p>",
            _flagged_section(out, cfg, sets), _lead_section(out, cfg, sets), _real_section(out),
            _run_section(cfg, figures_, timings, out), _qc_section(out), _training_section(out), _evaluation_section(out),
            _segmentation_section(out, cfg, sets), _tracking_section(out, cfg, sets)]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>stainseg report</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    write_text(out / "report.html", page)
    return out / "report.html"
