"""Command line: ``python -m backend predict|info|create-model …`` (the CLI contract).

Bad input ends with one line on stderr and exit status 2; no traceback unless SIAL_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import Cancelled, UserError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_CANCELLED = 130
READ_ONLY_ACTIONS = ("status", "export")
"""Session actions that only read the session: they take no lock and never change its files."""


class TerminalProgress:
    """A one-line progress display on stderr (in a log: a line every 10 % or every minute)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled
        self.tty = sys.stderr.isatty()
        self.last_decile = -1
        self.started = self.last_line = time.perf_counter()
        self.first_fraction: float | None = None  # a resumed job starts part-way

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        if self.first_fraction is None:
            self.first_fraction = fraction
        done = fraction - self.first_fraction
        eta = f", {elapsed / done * (1 - fraction):.0f} s left" if done > 0.02 and fraction < 1 else ""
        text = f"{self.label}: {fraction * 100:5.1f} % {message}{eta}"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(78)[:120])
            if fraction >= 1:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif int(fraction * 10) > self.last_decile or time.perf_counter() - self.last_line > 60:
            self.last_decile = int(fraction * 10)
            self.last_line = time.perf_counter()
            print(text, file=sys.stderr, flush=True)


def _monitor(label: str, args: argparse.Namespace) -> Any:
    """Progress on stderr (unless --quiet) and the job's notices as ``note:`` lines."""
    from ..progress import Monitor

    progress = TerminalProgress(label, not args.quiet)

    def notify(text: str) -> None:
        if progress.tty and progress.enabled:
            sys.stderr.write("\r" + " " * 78 + "\r")
        print(f"note: {text}", file=sys.stderr, flush=True)

    return Monitor(progress, None, notify)


def _existing_path(text: str) -> Path:
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    from ..predict.uncertainty import ACQUISITIONS
    from ..system.runtime import DEVICE_CHOICES

    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Interactive and active-learning segmentation of georeferenced rasters.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="class map, uncertainty heatmap and ranked patches for a raster",
        description="Writes OUT/classes.tif, OUT/uncertainty.tif, OUT/patches.gpkg and OUT/run.json.",
    )
    predict.add_argument("raster", type=_existing_path, help="any GDAL-readable raster")
    predict.add_argument(
        "--model", required=True, type=Path, help="model bundle folder (model.json + weights)"
    )
    predict.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    predict.add_argument(
        "--clicks", type=Path, help="point layer (GeoPackage …) with a class_id field, any CRS"
    )
    predict.add_argument(
        "--acquisition",
        choices=ACQUISITIONS,
        default="entropy",
        help="uncertainty measure (default: entropy)",
    )
    predict.add_argument(
        "--mc-passes", type=int, default=5, help="stochastic passes for mcdropout (default: 5)"
    )
    predict.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default: auto (the GPU if there is one)"
    )
    predict.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's, 512)")
    predict.add_argument(
        "--overlap", type=int, help="tile overlap in pixels (default: the model card's, 128)"
    )
    predict.add_argument(
        "--batch-size", type=int, help="tiles per forward pass (default: 2 on CPU, 16 on CUDA)"
    )
    predict.add_argument("--patch-size", type=int, help="side of the ranked patches (default: the tile size)")
    predict.add_argument(
        "--cache",
        action="store_true",
        help="keep per-tile outputs in OUT/.cache so a later run with more clicks "
        "recomputes only the tiles they touch",
    )
    predict.add_argument(
        "--skip-outside-clicks",
        action="store_true",
        help="ignore clicks outside the raster instead of stopping",
    )

    demo = commands.add_parser(
        "demo", help="the whole loop on a built-in example scene (or your raster), with a report"
    )
    demo.add_argument("raster", nargs="?", type=Path, help="your raster (default: a generated sample scene)")
    demo.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)"
    )
    demo.add_argument("--model", type=Path, help="model bundle (default: the bundled land-cover model)")
    demo.add_argument(
        "--labels", type=Path, help="reference labels for your raster (for the simulated clicks)"
    )
    demo.add_argument("--clicks", type=int, default=15, help="simulated clicks per mode (default: 15)")

    train = commands.add_parser(
        "train",
        help="train a model bundle from image/label rasters (resumes from its last checkpoint)",
        description="Settings, data and seed come from the JSON config (see configs/); the best "
        "bundle on the validation rasters is written to --out as training goes.",
    )
    train.add_argument("config", type=Path, help="training config (JSON)")
    train.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    train.add_argument("--work", type=Path, help="checkpoints and logs (default: runs/<bundle name>)")
    train.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    train.add_argument("--steps", type=int, help="override the config's number of steps")
    train.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    train.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")

    bench = commands.add_parser(
        "benchmark",
        help="DIAL's protocol with a simulated annotator: mIoU against clicks",
        description="Writes OUT/benchmark.json, OUT/benchmark.png and OUT/clicks.gpkg.",
    )
    bench.add_argument("raster", nargs="?", type=_existing_path, help="the raster (DIAL protocol)")
    bench.add_argument(
        "--protocol",
        choices=("dial", "sial"),
        default="dial",
        help="dial: refine a model with clicks on one raster (default); "
        "sial: train from clicks only on a config's rasters",
    )
    bench.add_argument("--labels", type=Path, help="reference labels on the raster's grid")
    bench.add_argument("--model", type=Path)
    bench.add_argument("--out", required=True, type=Path)
    bench.add_argument("--clicks", type=int, help="click budget (DIAL protocol)")
    bench.add_argument("--mode", choices=("ac", "disca"), default="ac")
    bench.add_argument("--order", choices=("entropy", "random", *ACQUISITIONS[1:]), default="entropy")
    sial = bench.add_argument_group("SIAL protocol")
    sial.add_argument("--config", type=Path, help="training config: training and validation rasters")
    sial.add_argument("--iterations", type=int, default=6)
    sial.add_argument("--steps", type=int, default=400, help="training steps per iteration")
    sial.add_argument("--loss", choices=("ewdl", "ce"), default="ewdl")
    sial.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a fresh network on all labels each iteration instead of carrying on",
    )
    sial.add_argument("--crop", type=int, default=128, help="training crop side in px (default 128)")
    sial.add_argument(
        "--average",
        type=float,
        default=0.0,
        help="end each iteration on a moving average of its weights, e.g. 0.998 (default: off)",
    )
    sial.add_argument(
        "--drop-noisy",
        type=float,
        default=0.0,
        help="share of superpixel-added labels each batch leaves out, those fitted worst (default 0)",
    )
    sial.add_argument(
        "--colour-jitter",
        type=float,
        default=0.0,
        help="the dense training's colour jitter on the training crops, e.g. 0.15 (default: off)",
    )
    sial.add_argument(
        "--max-scale",
        type=float,
        default=1.0,
        help="read each training crop at a scale drawn between 1/MAX and MAX, as the dense training "
        "does with 1.33 (default 1: off)",
    )
    sial.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="weight of a consistency term on the unlabelled pixels: crops pasted into each other "
        "(CutMix) must keep the classes the weights' moving average is confident of; needs --average "
        "(default 0: off)",
    )
    sial.add_argument(
        "--affinity",
        type=float,
        default=0.0,
        help="weight of a colour-affinity term: neighbouring pixels of one colour share a class "
        "(default 0: off)",
    )
    sial.add_argument(
        "--balance-classes",
        action="store_true",
        help="centre training crops on every class equally often, not on every labelled pixel",
    )
    sial.add_argument(
        "--adjust-prior",
        action="store_true",
        help="after each fit, correct the network for its labels' class shares against the imagery's, "
        "estimated as the mean of its own predictions (no ground truth)",
    )
    sial.add_argument(
        "--clicks-per-class",
        type=int,
        default=1,
        help="clicks per class and image each iteration, in its largest missed regions (default 1)",
    )
    sial.add_argument(
        "--first-clicks",
        choices=(
            "regions",
            "untrained",
        ),  # backend.protocols.sial.FIRST_CLICKS, not imported here: it loads torch
        default="regions",
        help="what the first iteration's annotator sees: regions: no model yet, so it clicks the "
        "centres of each class's largest regions (default); untrained: the untrained network's output",
    )
    sial.add_argument(
        "--expand",
        choices=("none", "slic", "felzenszwalb"),
        default="none",
        help="spread each click over its superpixel",
    )
    sial.add_argument(
        "--sieve", default="0.8", help="drop expanded pixels the model confidently disputes ('none': keep)"
    )
    sial.add_argument(
        "--segment-size", type=int, default=150, help="target pixels per superpixel (default 150)"
    )
    sial.add_argument(
        "--self-training",
        type=float,
        metavar="CONFIDENCE",
        help="after each iteration's fit, train a fresh network on the labels plus the pixels "
        "the first was at least this confident about (pseudo-labels), e.g. 0.9 (default: off)",
    )
    sial.add_argument(
        "--dense-labels",
        action="store_true",
        help="no annotator: one fit of the same training on every labelled pixel, the dense "
        "reference at this protocol's budget (one iteration, no --expand)",
    )
    sial.add_argument("--reference", type=Path, help="a densely trained bundle of the same network")
    sial.add_argument("--image-size", type=int, default=512, help="the annotator's image size (default 512)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    bench.add_argument(
        "--patch-size", type=int, default=256, help="side of the visited patches (default 256)"
    )
    bench.add_argument("--class-map", help='JSON re-coding the labels, e.g. \'{"0": 1, "1": 0}\'')
    _add_disca_options(bench)

    plot = commands.add_parser("plot", help="draw several benchmark runs on one mIoU-against-clicks plot")
    plot.add_argument("runs", nargs="+", type=Path, help="benchmark.json files (or their folders)")
    plot.add_argument("--out", required=True, type=Path, help="PNG to write")
    plot.add_argument("--title")

    session = commands.add_parser("session", help="an interactive session, headless (what the plugin drives)")
    actions = session.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_session = actions.add_parser("create", help="start a session on a raster with a model")
    create_session.add_argument("session", type=Path, help="session GeoPackage to create")
    create_session.add_argument("--raster", required=True, type=Path)
    create_session.add_argument("--model", type=Path, help="model bundle (or --sial --classes)")
    create_session.add_argument(
        "--classes",
        help="with --sial, instead of --model: an untrained network for these classes "
        "(comma-separated, name or name:#rrggbb), written beside the session as SESSION-model/",
    )
    create_session.add_argument(
        "--sial",
        action="store_true",
        help="train the model from the clicks alone (SIAL rounds: cross-entropy, SLIC superpixels)",
    )
    create_session.add_argument(
        "--adjust-prior",
        action="store_true",
        help="with --sial: after each round, correct the model for the class shares of the clicks",
    )
    create_session.add_argument(
        "--starting-weights",
        type=Path,
        help="continue from another session's checkpoint or bundle (sequential adaptation)",
    )
    for name, text in (("status", "clicks, iterations, checkpoints"), ("undo", "revert the last action")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("session", type=Path)
    click = actions.add_parser("click", help="add a click (pixel row/col or map x/y in the raster's CRS)")
    click.add_argument("session", type=Path)
    click.add_argument("--class", dest="class_name", required=True, help="class name or index")
    where = click.add_mutually_exclusive_group(required=True)
    where.add_argument("--pixel", nargs=2, type=int, metavar=("ROW", "COL"))
    where.add_argument("--xy", nargs=2, type=float, metavar=("X", "Y"))
    remove = actions.add_parser("remove", help="remove a click by id")
    remove.add_argument("session", type=Path)
    remove.add_argument("click_id", type=int)
    retrain = actions.add_parser("retrain", help="one DISCA round on all clicks")
    retrain.add_argument("session", type=Path)
    _add_disca_options(retrain)
    predict_session = actions.add_parser("predict", help="update the maps (only touched tiles when possible)")
    predict_session.add_argument("session", type=Path)
    predict_session.add_argument("--acquisition", choices=ACQUISITIONS, default="entropy")
    export = actions.add_parser("export", help="write the adapted model as a bundle")
    export.add_argument("session", type=Path)
    export.add_argument("--out", required=True, type=Path)
    for sub in (create_session, click, remove, retrain, predict_session, export, *actions.choices.values()):
        if not any(a.dest == "device" for a in sub._actions):
            sub.add_argument("--device", choices=DEVICE_CHOICES, default="auto")

    card = commands.add_parser(
        "card",
        help="measure a bundle on validation rasters and write its MODEL_CARD.md",
        description="Records mIoU and per-class IoU without clicks and after simulated clicks in model.json.",
    )
    card.add_argument("model", type=Path, help="bundle folder")
    card.add_argument(
        "--config", type=Path, help="its training config: validation rasters and class map from there"
    )
    card.add_argument(
        "--validation",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABELS"),
        default=[],
        help="a validation pair (repeatable)",
    )
    card.add_argument("--clicks", type=int, default=10, help="simulated clicks per raster (default 10)")
    card.add_argument("--notes", type=Path, help="JSON with 'failure_modes' and 'notes' lists for the card")
    card.add_argument("--device", choices=DEVICE_CHOICES, default="auto")

    confid = commands.add_parser(
        "confidnet",
        help="train a ConfidNet head for a bundle (the 'confidnet' acquisition function)",
        description="Trains on the model's own outputs over the config's training rasters (model frozen).",
    )
    confid.add_argument("model", type=Path, help="bundle folder (updated in place unless --out)")
    confid.add_argument("--config", required=True, type=Path, help="training config: rasters and class map")
    confid.add_argument("--out", type=Path, help="write the bundle with its head here instead")
    confid.add_argument("--steps", type=int, default=600)
    confid.add_argument("--device", choices=DEVICE_CHOICES, default="auto")

    info = commands.add_parser("info", help="describe a model bundle or a raster")
    info.add_argument("path", type=Path, help="a model bundle folder or a raster")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    create = commands.add_parser(
        "create-model",
        help="write a freshly initialised model bundle (a start for training, or for tests)",
    )
    create.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    create.add_argument(
        "--classes", required=True, help="comma-separated class names, optionally name:#rrggbb"
    )
    create.add_argument("--name", help="model name (default: the folder's name)")
    create.add_argument("--bands", default="1,2,3", help="1-based raster bands to read (default: 1,2,3)")
    create.add_argument("--architecture", default="Linknet", help="segmentation-models-pytorch architecture")
    create.add_argument("--encoder", default="resnet34", help="segmentation-models-pytorch encoder")
    create.add_argument("--no-clicks", action="store_true", help="no click channels")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = bool(os.environ.get("SIAL_DEBUG"))
    if not debug:
        warnings.simplefilter("ignore")
        _quiet_gdal()
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..system.runtime import limit_gdal_cache, tune_allocator

    limit_gdal_cache()
    tune_allocator()
    handler: Callable[[argparse.Namespace], int] = {
        "predict": _predict,
        "info": _info,
        "demo": _demo,
        "benchmark": _benchmark,
        "plot": _plot,
        "session": _session,
        "train": _train,
        "card": _card,
        "confidnet": _confidnet,
        "create-model": _create_model,
    }[args.command]
    try:
        return handler(args)
    except UserError as exc:
        _clear_progress_line(args)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        _clear_progress_line(args)
        print("cancelled: no output was left half-written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        _clear_progress_line(args)
        if debug:
            traceback.print_exc()
        from ..system.diskspace import is_disk_full

        if is_disk_full(exc):
            print(f"error: the disk is full: {_first_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(
            f"internal error: {type(exc).__name__}: {exc} (a bug: rerun with SIAL_DEBUG=1 and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _quiet_gdal() -> None:
    """GDAL's own warnings and errors (libjpeg's, a damaged block's) stay off the terminal: every
    failure reaches the user as one ``error:`` line. SIAL_DEBUG=1 shows them again."""
    import logging

    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _clear_progress_line(args: argparse.Namespace) -> None:
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")


def _predict(args: argparse.Namespace) -> int:
    from ..predict.job import PredictParameters, run_predict

    params = PredictParameters(
        raster=args.raster,
        out_dir=args.out,
        model_dir=args.model,
        clicks=args.clicks,
        acquisition=args.acquisition,
        mc_passes=args.mc_passes,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        cache=args.cache,
        skip_outside_clicks=args.skip_outside_clicks,
    )
    report = run_predict(params, _monitor("predict", args))
    _print_report(report)
    return 0


def _print_report(report: Any) -> None:
    for notice in report.notices:
        print(f"note: {notice}", file=sys.stderr)
    run = report.run
    print(
        f"{run['mode']} prediction of {run['width']} × {run['height']} px on {run['device']}: "
        f"{run['tiles_computed']}/{run['tile_count']} tiles in {run['seconds']['total']:.1f} s, "
        f"peak memory {run['peak_memory_mib']:.0f} MiB"
    )
    for path in (report.classes, report.uncertainty, report.patches, report.out_dir / "run.json"):
        print(f"  {path}")


def _demo(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo

    if args.labels is not None and args.raster is None:
        raise UserError("--labels goes with your raster: give the raster too")
    progress = _monitor("demo", args)
    result = run_demo(args.out, args.raster, args.labels, args.model, args.clicks, progress)
    for stage, value in result.miou.items():
        print(f"mIoU {stage}: {value:.2f} %")
    print(f"Report: {result.report.resolve()}")
    print(f"Maps for QGIS: {result.prediction.resolve()} (classes.tif, uncertainty.tif, patches.gpkg)")
    return 0


def _add_disca_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DISCA retraining")
    group.add_argument("--disca-steps", type=int, help="SGD steps per round (default 10)")
    group.add_argument("--disca-lr", type=float, help="learning rate")
    group.add_argument("--disca-lambda", type=float, help="weight of the L1 anchor to the initial prediction")
    group.add_argument("--click-loss", choices=("ce", "ewdl"), help="cross-entropy (DIAL) or EWDL (SIAL)")
    group.add_argument(
        "--dial-settings", action="store_true", help="DIAL's published settings (10 steps, lr 2e-6, λ 1)"
    )


def _disca_settings(args: argparse.Namespace, base: Any = None) -> Any:
    from dataclasses import replace

    from ..learn.disca import DiscaSettings

    settings = DiscaSettings.dial() if args.dial_settings else (base or DiscaSettings())
    changes = {
        "steps": args.disca_steps,
        "learning_rate": args.disca_lr,
        "anchor_weight": args.disca_lambda,
        "click_loss": args.click_loss,
    }
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def _benchmark(args: argparse.Namespace) -> int:
    from ..protocols.dial import BenchmarkParameters, run_benchmark

    if args.protocol == "sial":
        return _sial(args)
    missing = [name for name in ("raster", "labels", "model", "clicks") if getattr(args, name) is None]
    if missing:
        raise UserError(f"the DIAL protocol needs {', '.join(missing)} (see --help)")

    class_map = None
    if args.class_map:
        try:
            class_map = {int(k): int(v) for k, v in json.loads(args.class_map).items()}
        except (ValueError, AttributeError) as exc:
            raise UserError(f"--class-map must be a JSON object of label → class index ({exc})") from None
    params = BenchmarkParameters(
        raster=args.raster,
        labels=args.labels,
        out_dir=args.out,
        clicks=args.clicks,
        mode=args.mode,
        order=args.order,
        model_dir=args.model,
        seed=args.seed,
        device=args.device,
        patch_size=args.patch_size,
        class_map=class_map,
        disca=_disca_settings(args),
    )
    result = run_benchmark(params, _monitor("benchmark", args))
    steps = {s["clicks"]: s["miou"] for s in result["steps"]}
    marks = ", ".join(f"{n} clicks {steps[n]:.2f}" for n in (10, 25, 50) if n in steps)
    print(
        f"{result['mode'].upper()} / {result['order']}: mIoU {result['initial_miou']:.2f} → "
        f"{result['final_miou']:.2f} after {len(result['steps'])} clicks ({marks}); "
        f"{result['seconds_per_click']} s per click"
    )
    print(f"  {args.out / 'benchmark.json'}\n  {args.out / 'benchmark.png'}")
    return 0


def _sial(args: argparse.Namespace) -> int:
    from ..learn.sparse_training import SparseSettings
    from ..learn.superpixels import ExpansionSettings
    from ..learn.training import TrainingConfig
    from ..protocols.sial import SialParameters, run_sial

    if args.config is None:
        raise UserError("the SIAL protocol needs --config (training and validation rasters)")
    if args.clicks_per_class < 1 or args.iterations < 1:
        raise UserError("--iterations and --clicks-per-class must be at least 1")
    if args.drop_noisy and args.expand == "none":
        raise UserError(
            "--drop-noisy leaves out superpixel-added labels: it needs --expand slic or felzenszwalb"
        )
    if args.self_training is not None and not 0.0 < args.self_training <= 1.0:
        raise UserError("--self-training takes a confidence in (0, 1]")
    if args.self_training is not None and args.adjust_prior:
        raise UserError(
            "--adjust-prior knows the class shares of the clicks, not of pseudo-labels: use one or the other"
        )
    expansion = None
    if args.expand != "none":
        try:
            sieve = None if args.sieve == "none" else float(args.sieve)
        except ValueError:
            raise UserError(f"--sieve takes a probability or 'none', not {args.sieve!r}") from None
        expansion = ExpansionSettings(method=args.expand, segment_size=args.segment_size, sieve=sieve)
        expansion.check()
    training = SparseSettings(
        steps=args.steps,
        crop=args.crop,
        loss=args.loss,
        average=args.average,
        drop_noisy=args.drop_noisy,
        colour_jitter=args.colour_jitter,
        balance_classes=args.balance_classes,
        max_scale=args.max_scale,
        consistency=args.consistency,
        affinity=args.affinity,
        adjust_prior=args.adjust_prior,
        seed=args.seed,
    )
    training.check()
    params = SialParameters(
        config=TrainingConfig.load(args.config),
        out_dir=args.out,
        iterations=args.iterations,
        image_size=args.image_size,
        clicks_per_class=args.clicks_per_class,
        from_scratch=args.from_scratch,
        first_clicks=args.first_clicks,
        training=training,
        expansion=expansion,
        self_training=args.self_training,
        dense_labels=args.dense_labels,
        reference=args.reference,
        device=args.device,
        seed=args.seed,
    )
    result = run_sial(params, _monitor("sial", args))
    if result["dense_labels"]:
        print(f"every labelled pixel: validation mIoU {result['final_miou']:.2f}")
    else:
        for it in result["iterations"]:
            before = it.get("prior_shift", {}).get("miou_before")
            print(
                f"iteration {it['iteration']}: {it['clicks']} clicks ({it['clicked_fraction_percent']:.4f} % "
                f"of the pixels), validation mIoU {it['validation_miou']:.2f}"
                + (f" ({before:.2f} before the prior correction)" if before is not None else "")
            )
    if result["reference_miou"]:
        print(
            f"dense reference: {result['reference_miou']:.2f} → {100 * result['share_of_dense']:.1f} % of it"
        )
    print(f"  {args.out / 'sial.json'}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ..protocols.dial import BENCHMARK_FILE, plot_runs

    results = []
    for path in args.runs:
        path = path / BENCHMARK_FILE if path.is_dir() else path
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read benchmark results {path}: {exc}") from None
    print(plot_runs(results, args.out, args.title))
    return 0


def _session(args: argparse.Namespace) -> int:
    from ..session.session import Session

    if args.action == "create":
        from ..session.settings import SialSettings

        if args.adjust_prior and not args.sial:
            raise UserError("--adjust-prior corrects SIAL rounds: it needs --sial")
        if args.classes is not None:
            from ..learn.new_model import create_model_for_raster, parse_classes

            if not args.sial or args.model is not None:
                raise UserError(
                    "--classes makes a network to learn from clicks: use it with --sial, not --model"
                )
            if args.session.exists():
                raise UserError(f"{args.session} already exists")
            classes = parse_classes(args.classes)
            args.model = create_model_for_raster(
                args.raster, classes, args.session.with_name(f"{args.session.stem}-model")
            )
        elif args.model is None:
            raise UserError("a session needs --model (or --sial --classes for a network learnt from clicks)")
        settings = SialSettings.recommended() if args.sial else None
        if settings is not None and args.adjust_prior:
            settings = replace(settings, training=replace(settings.training, adjust_prior=True))
        try:
            session = Session.create(
                args.session, args.raster, args.model, args.device, args.starting_weights, settings
            )
        except BaseException:
            if args.classes is not None:  # the network made for this session: no session uses it
                shutil.rmtree(args.model, ignore_errors=True)
            raise
        print(
            f"created {args.session} ({session.info.width} × {session.info.height} px, "
            f"model {session.bundle.card.name})"
        )
        return 0
    session = Session.open(args.session, args.device, writer=args.action not in READ_ONLY_ACTIONS)
    for notice in session.notices:
        print(f"note: {notice}", file=sys.stderr)
    progress = _monitor(args.action, args)
    if args.action == "status":
        for it in session.iterations():
            current = " (current model)" if it.iteration == session.current.iteration else ""
            print(
                f"iteration {it.iteration}: {it.kind}, {it.clicks} clicks, "
                f"checkpoint {it.checkpoint or '-'}{' (pruned)' if it.pruned else ''}, "
                f"mIoU {it.miou if it.miou is not None else '-'}{current}"
            )
        for c in session.clicks():
            print(
                f"click {c.click_id}: ({c.row}, {c.col}) {c.class_name}, iteration {c.iteration}, {c.source}"
            )
    elif args.action == "click":
        card = session.bundle.card
        class_id = int(args.class_name) if args.class_name.isdigit() else card.class_index(args.class_name)
        if class_id is None:
            raise UserError(f"unknown class '{args.class_name}' ({', '.join(c.name for c in card.classes)})")
        if args.pixel:
            stored = session.add_click(args.pixel[0], args.pixel[1], class_id)
        else:
            stored = session.add_click_at(args.xy[0], args.xy[1], class_id)
        print(f"click {stored.click_id} at pixel ({stored.row}, {stored.col}): {stored.class_name}")
    elif args.action == "remove":
        session.remove_click(args.click_id)
        print(f"removed click {args.click_id}")
    elif args.action == "undo":
        print(session.undo())
    elif args.action == "retrain":
        from ..learn.disca import DiscaSettings

        settings = (
            _disca_settings(args, session.settings) if isinstance(session.settings, DiscaSettings) else None
        )
        report = session.retrain(settings, progress)
        print(
            f"round {session.iteration}: {report.steps} steps on {report.crops} crops, "
            f"{report.clicks} clicks, "
            f"{report.seconds:.1f} s, loss {report.losses[0]:.3f} → {report.losses[-1]:.3f}"
        )
    elif args.action == "predict":
        report = session.predict(args.acquisition, progress)
        _print_report(report)
    elif args.action == "export":
        print(f"wrote {session.export_bundle(args.out)}")
    session.close()
    return 0


def _card(args: argparse.Namespace) -> int:
    from ..learn.training import TrainingConfig
    from ..protocols.modelcard import evaluate, record, write_model_card

    pairs = [tuple(p) for p in args.validation]
    class_map = None
    if args.config is not None:
        config = TrainingConfig.load(args.config)
        pairs = pairs or list(config.validation)
        class_map = config.class_map
    if not pairs:
        raise UserError("no validation rasters: give --config or --validation IMAGE LABELS")
    progress = _monitor("card", args)
    evaluation = evaluate(args.model, pairs, class_map, args.clicks, args.device, progress)
    record(args.model, evaluation)
    extra = json.loads(args.notes.read_text()) if args.notes else {}
    path = write_model_card(args.model, extra.get("failure_modes", []), extra.get("notes", []))
    for key, entry in evaluation.items():
        if key.startswith("clicks_"):
            print(f"{key.replace('_', ' ')}: mIoU {entry['miou']:.2f} {entry['per_class_iou']}")
    print(f"wrote {path}")
    return 0


def _confidnet(args: argparse.Namespace) -> int:
    from ..learn.confidnet import train_confidnet
    from ..learn.training import TrainingConfig, command_line
    from ..model.bundle import load_bundle, save_bundle

    config = TrainingConfig.load(args.config)
    bundle = load_bundle(args.model)
    progress = _monitor("confidnet", args)
    report = train_confidnet(
        bundle, config.train, config.class_map, args.steps, device=args.device, monitor=progress
    )
    provenance = dict(bundle.card.provenance)
    provenance["confidnet"] = {
        "steps": args.steps,
        "rasters": [Path(i).name for i, _ in config.train],
        "command": command_line(),
    } | {k: round(v, 4) for k, v in report.items()}
    bundle.card = bundle.card.with_updates(provenance=provenance)
    target = save_bundle(bundle, args.out or args.model)
    print(f"wrote {target}: ConfidNet loss {report['first_loss']:.4f} → {report['last_loss']:.4f}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from ..learn.training import CHECKPOINT, TrainingConfig, command_line, train

    config = TrainingConfig.load(args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path("runs") / args.out.name
    if args.restart:
        (work / CHECKPOINT).unlink(missing_ok=True)
    bundle = train(
        config,
        args.out,
        work,
        args.device,
        _monitor("train", args),
        command_line(),
    )
    validation = bundle.card.provenance.get("validation", {})
    miou, per_class = validation.get("miou", "n/a"), validation.get("per_class_iou", "")
    print(f"wrote {bundle.directory}: validation mIoU {miou} {per_class}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..model.bundle import CARD_FILE

    path: Path = args.path
    if (path.is_dir() and (path / CARD_FILE).exists()) or path.name == CARD_FILE:
        data = _model_info(path)
    elif path.is_dir():
        raise UserError(f"{path} is a folder without {CARD_FILE}: neither a model bundle nor a raster")
    else:
        data = _raster_info(path)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_tree(data)
    return 0


def _model_info(path: Path) -> dict[str, Any]:
    from ..model.bundle import load_bundle

    bundle = load_bundle(path)
    card = bundle.card
    parameters = sum(p.numel() for p in bundle.network.parameters())
    data = card.to_json()
    data["parameters"] = parameters
    data["in_channels"] = card.in_channels
    data["kind"] = "model bundle"
    return data


def _raster_info(path: Path) -> dict[str, Any]:
    import rasterio

    from ..io.raster import inspect_raster
    from ..io.tiling import TileGrid

    info = inspect_raster(path)
    with rasterio.open(path) as dataset:
        blocks = dataset.block_shapes[0]
        overviews = dataset.overviews(1)
        masks = [str(flag[0].name) if flag else "" for flag in dataset.mask_flag_enums]
    grid = TileGrid(info.width, info.height)
    return {
        "kind": "raster",
        "path": str(info.path),
        "size": [info.width, info.height],
        "bands": info.count,
        "dtype": info.dtype,
        "crs": info.crs_label,
        "georeferenced": info.georeferenced,
        "transform": list(info.transform)[:6],
        "nodata": info.nodata,
        "mask": masks[0] if len(set(masks)) == 1 else masks,
        "block": list(blocks),
        "overviews": overviews,
        "tiles_512_overlap_128": len(grid),
        "notices": list(info.notices),
    }


def _print_tree(data: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{pad}{key}:")
            _print_tree(value, indent + 1)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{pad}{key}:")
            for item in value:
                print(f"{pad}  - " + ", ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{pad}{key}: {value}")


def _create_model(args: argparse.Namespace) -> int:
    from ..learn.new_model import fresh_card, parse_classes
    from ..model.bundle import create_bundle, save_bundle

    try:
        bands = tuple(int(b) for b in args.bands.split(","))
    except ValueError:
        raise UserError(f"--bands must be comma-separated band numbers, not '{args.bands}'") from None
    card = fresh_card(
        parse_classes(args.classes),
        args.name or args.out.name,
        bands,
        architecture=args.architecture,
        encoder=args.encoder,
        clicks=not args.no_clicks,
        seed=args.seed,
    )
    bundle = create_bundle(card, seed=args.seed)
    target = save_bundle(bundle, args.out, dtype=args.dtype)
    print(
        f"wrote {target} ({card.architecture}/{card.encoder}, "
        f"{card.in_channels} input channels, {card.n_classes} classes)"
    )
    return 0
