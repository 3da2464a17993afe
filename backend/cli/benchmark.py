"""``benchmark``: a simulated annotator, DIAL's protocol (refine a model with clicks on one raster)
or SIAL's (train a network from clicks alone on a config's rasters; see :mod:`.sial_protocol`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from . import sial_protocol
from .options import add_device, add_disca_options, add_patch_score, add_pixel_size, disca_settings
from .terminal import monitor

NAME = "benchmark"
HELP = "DIAL's protocol with a simulated annotator: mIoU against clicks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..predict.uncertainty import ACQUISITIONS

    parser.description = "Writes OUT/benchmark.json, OUT/benchmark.png and OUT/clicks.gpkg."
    parser.add_argument("raster", nargs="?", type=Path, help="the raster (DIAL protocol)")
    parser.add_argument(
        "--protocol",
        choices=("dial", "dock", "sial"),
        default="dial",
        help="dial: refine a model with clicks on one raster, a round after every click (default); "
        "dock: the dock's pattern, a few clicks then one round (--pattern, --rounds); "
        "sial: train from clicks only on a config's rasters",
    )
    parser.add_argument("--labels", type=Path, help="reference labels on the raster's grid")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--clicks", type=int, help="click budget (DIAL protocol)")
    parser.add_argument("--mode", choices=("ac", "disca"), default="ac")
    parser.add_argument("--order", choices=("entropy", "random", *ACQUISITIONS[1:]), default="entropy")
    dock = parser.add_argument_group("dock protocol")
    dock.add_argument(
        "--pattern",
        choices=("largest", "per-class"),
        default="largest",
        help="largest: the --clicks largest errors of any class per round (default); "
        "per-class: each class's --per-class largest missed regions",
    )
    dock.add_argument("--per-class", type=int, default=1, help="clicks per class and round (default 1)")
    dock.add_argument("--rounds", type=int, default=1, help="rounds of clicks then Retrain (default 1)")
    sial_protocol.add_arguments(parser.add_argument_group("SIAL protocol"))
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)
    parser.add_argument(
        "--patch-size", type=int, default=256, help="side of the visited patches (default 256)"
    )
    add_patch_score(parser, None, "class-weighted with --mode ac, mean with --mode disca")
    parser.add_argument("--class-map", help='JSON re-coding the labels, e.g. \'{"0": 1, "1": 0}\'')
    parser.add_argument(
        "--adapt-statistics",
        action="store_true",
        help="first re-estimate BatchNorm statistics on the raster (AdaBN)",
    )
    add_pixel_size(parser)
    add_disca_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..protocols.dial import BenchmarkParameters, run_benchmark

    if args.protocol == "sial":
        return sial_protocol.run(args)
    if args.protocol == "dock":
        return _run_dock(args)
    missing = [name for name in ("raster", "labels", "model", "clicks") if getattr(args, name) is None]
    if missing:
        raise UserError(f"the DIAL protocol needs {', '.join(missing)} (see --help)")
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
        class_map=_class_map(args.class_map),
        disca=disca_settings(args),
        pixel_size=args.pixel_size,
        adapt_statistics=args.adapt_statistics,
        patch_score=args.patch_score,
    )
    result = run_benchmark(params, monitor("benchmark", args))
    steps = {s["clicks"]: s["miou"] for s in result["steps"]}
    marks = ", ".join(f"{n} clicks {steps[n]:.2f}" for n in (10, 25, 50) if n in steps)
    print(
        f"{result['mode'].upper()} / {result['order']}: mIoU {result['initial_miou']:.2f} → "
        f"{result['final_miou']:.2f} after {len(result['steps'])} clicks ({marks}); "
        f"{result['seconds_per_click']} s per click"
    )
    print(f"  {args.out / 'benchmark.json'}\n  {args.out / 'benchmark.png'}")
    return 0


def _run_dock(args: argparse.Namespace) -> int:
    from ..protocols.dock import DOCK_FILE, DockParameters, run_dock

    missing = [name for name in ("raster", "labels", "model") if getattr(args, name) is None]
    if missing:
        raise UserError(f"the dock protocol needs {', '.join(missing)} (see --help)")
    params = DockParameters(
        raster=args.raster,
        labels=args.labels,
        out_dir=args.out,
        clicks=args.clicks or 10,
        pattern=args.pattern,
        per_class=args.per_class,
        rounds=args.rounds,
        model_dir=args.model,
        device=args.device,
        class_map=_class_map(args.class_map),
        guard=args.guard is not False,
        disca=disca_settings(args),
        pixel_size=args.pixel_size,
        adapt_statistics=args.adapt_statistics,
    )
    result = run_dock(params, monitor("benchmark", args))
    for r in result["rounds"]:
        state = "kept" if r["kept"] else f"rolled back ({r['reason']})"
        print(
            f"round {r['round']}: {r['clicks']} clicks, mIoU {r['miou_before_clicks']:.2f} → "
            f"{r['miou_with_clicks']:.2f} with the clicks → {r['miou_after_round']:.2f} after the "
            f"round, {state}"
        )
    print(f"  {args.out / DOCK_FILE}")
    return 0


def _class_map(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        return {int(k): int(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError) as exc:
        raise UserError(f"--class-map must be a JSON object of label → class index ({exc})") from None
