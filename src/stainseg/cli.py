"""Command line: a thin layer that parses arguments and calls the library.

Bad input ends with a one-line message and exit code 2 (1 when some items of a batch failed);
``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from stainseg import __version__
from stainseg.errors import StainsegError


def _cmd_synth(a: argparse.Namespace) -> int:
    from stainseg.synth import generate_experiment

    toml = generate_experiment(a.out, wells=a.wells, sites=a.sites, times=a.times, size=a.size, seed=a.seed, preview=a.preview)
    print(f"wrote synthetic experiment {toml}")
    return 0


def _cmd_groundtruth(a: argparse.Namespace) -> int:
    from stainseg.config import load_config
    from stainseg.stages.groundtruth import run_groundtruth

    summary = run_groundtruth(load_config(a.experiment), a.out, preview=a.preview, workers=a.workers, scheduler=a.scheduler)
    print(summary.text())
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from stainseg.config import load_config
    from stainseg.stages.train import run_training

    cfg = load_config(a.experiment)
    if a.preset:
        cfg.train.preset = a.preset
    if a.iterations:
        cfg.train.iterations = a.iterations
    if a.max_minutes:
        cfg.train.max_minutes = a.max_minutes
    run_training(cfg, a.out, labels_dir=a.labels, resume=a.resume)
    print(f"model written to {a.out}")
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from stainseg.stages.segment import segment_experiment, segment_files

    opts = dict(save_probability=a.save_probability, save_uncertainty=a.save_uncertainty, resume=a.resume,
                workers=a.workers, scheduler=a.scheduler, output_format=a.format, skip_flagged=a.skip_flagged, engine=a.engine,
                constant_illumination=a.constant_illumination)
    if a.experiment:
        if a.images:
            raise StainsegError("give either IMAGE files or --experiment, not both")
        result = segment_experiment(a.model, a.experiment, a.out, **opts)
    else:
        if not a.images:
            raise StainsegError("no IMAGE files given; list images or use --experiment EXPERIMENT.toml")
        result = segment_files(a.model, a.images, a.out, **opts)
    print(result.text())
    return 1 if result.failed else 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from stainseg.stages.evaluate import evaluate_folders

    metrics = evaluate_folders(a.truth, a.pred, a.out)
    overall = metrics.get("overall", metrics)
    print(f"{overall['n_truth']} objects in {len(metrics['images'])} images: {overall['percent_f_above']:.1f} % with F >= 0.6, "
          f"F1@IoU0.5 = {overall['f1']:.3f}, mean AP@0.5:0.95 = {overall['mean_ap']:.3f}; wrote {a.out}")
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    from stainseg.config import load_config
    from stainseg.stages.pipeline import run_experiment

    result = run_experiment(load_config(a.experiment), a.out, force=a.force)
    print(result.text())
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from stainseg.stages.pipeline import run_demo

    result = run_demo(a.out, force=a.force)
    print(result.text())
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from stainseg.export.bioimageio import export_bioimageio

    print(f"wrote bioimage.io package {export_bioimageio(a.model, a.out, sample=a.sample)}")
    return 0


def _parallel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=0, help="run on a local Dask cluster with N worker processes")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786")


def build_parser() -> argparse.ArgumentParser:
    """The ``stainseg`` argument parser (one sub-command per stage)."""
    parser = argparse.ArgumentParser(prog="stainseg", description="Segment label-free cell images with a network trained on automatic labels from end-point stains.")
    parser.add_argument("--version", action="version", version=f"stainseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic time-lapse experiment with true labels")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--wells", type=int, default=1)
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--times", type=int, default=4)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", action="store_true", help="also write preview.png")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("groundtruth", help="automatic labels from the stains, for every end-point image set")
    p.add_argument("experiment", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--preview", action="store_true", help="a PNG per image set with label outlines over the stain")
    _parallel_args(p)
    p.set_defaults(func=_cmd_groundtruth)

    p = sub.add_parser("train", help="train the network on automatic labels; writes a model directory")
    p.add_argument("experiment", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--labels", type=Path, default=None, help="reuse the output folder of `stainseg groundtruth`")
    p.add_argument("--preset", choices=["fast", "paper"], default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("segment", help="segment images (or every image set of an experiment) with a model")
    p.add_argument("model", type=Path)
    p.add_argument("images", type=Path, nargs="*")
    p.add_argument("--experiment", type=Path, default=None)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--save-probability", action="store_true")
    p.add_argument("--save-uncertainty", action="store_true")
    p.add_argument("--resume", action="store_true", help="skip images whose label file is complete")
    p.add_argument("--format", choices=["tiff", "ome-zarr"], default="tiff")
    p.add_argument("--skip-flagged", action="store_true",
                   help="do not segment images the quality checks flag (blank, out of focus, unlike the training data ...): "
                        "they get empty labels and their reason in index.csv")
    p.add_argument("--engine", choices=["auto", "torch", "onnx"], default=None,
                   help="what runs the network (default: the model's [segment] engine, 'auto': ONNX Runtime on a CPU when the "
                        "model folder has model.onnx, torch on a CUDA GPU); recorded in run.json")
    p.add_argument("--constant-illumination", action="store_true",
                   help="the illumination does not change across the plate: divide by the model's flat field (from its training "
                        "images, MODEL/flat_field.npy) instead of fitting each image's background (faster)")
    _parallel_args(p)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("evaluate", help="score predicted labels against truth labels (paired by file name)")
    p.add_argument("--truth", type=Path, required=True)
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("run", help="everything: labels, QC, training, segmentation, evaluation, tracking, report")
    p.add_argument("experiment", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--force", action="store_true", help="redo stages whose outputs are complete")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("export", help="write a BioImage Model Zoo package (zip) of a model folder")
    p.add_argument("model", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--sample", type=Path, default=None,
                   help="image of the model's input channels for the test tensors and cover (default: first image set of the training experiment)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("demo", help="the bundled samples end to end: `run` on a synthetic time-lapse made on the fly and a real phase-contrast section (the isl crop); about 1-3 minutes on 2 cores")
    p.add_argument("-o", "--out", type=Path, default=Path("out/demo"))
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stainseg`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except StainsegError as exc:
        if args.debug:
            raise
        print(f"stainseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stainseg: interrupted; completed outputs are kept, rerun to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(f"stainseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
