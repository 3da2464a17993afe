"""``demo [RASTER]``: the whole loop on a built-in example scene (or your raster), with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .terminal import monitor

NAME = "demo"
HELP = "the whole loop on a built-in example scene (or your raster), with a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "raster", nargs="?", type=Path, help="your raster (default: a generated sample scene)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)"
    )
    parser.add_argument("--model", type=Path, help="model bundle (default: the bundled land-cover model)")
    parser.add_argument(
        "--labels", type=Path, help="reference labels for your raster (for the simulated clicks)"
    )
    parser.add_argument("--clicks", type=int, default=15, help="simulated clicks per mode (default: 15)")


def run(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo

    if args.labels is not None and args.raster is None:
        raise UserError("--labels goes with your raster: give the raster too")
    result = run_demo(args.out, args.raster, args.labels, args.model, args.clicks, monitor("demo", args))
    for stage, value in result.miou.items():
        print(f"mIoU {stage}: {value:.2f} %")
    print(f"Report: {result.report.resolve()}")
    print(f"Maps for QGIS: {result.prediction.resolve()} (classes.tif, uncertainty.tif, patches.gpkg)")
    return 0
