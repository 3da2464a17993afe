"""``predict RASTER --model DIR --out OUT``: class map, uncertainty heatmap and ranked patches."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device, add_patch_score, add_pixel_size, add_precision
from .terminal import monitor, print_report

NAME = "predict"
HELP = "class map, uncertainty heatmap and ranked patches for a raster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..predict.uncertainty import ACQUISITIONS

    parser.description = "Writes OUT/classes.tif, OUT/uncertainty.tif, OUT/patches.gpkg and OUT/run.json."
    parser.add_argument("raster", type=Path, help="any GDAL-readable raster")
    parser.add_argument(
        "--model", required=True, type=Path, help="model bundle folder (model.json + weights)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument(
        "--clicks", type=Path, help="point layer (GeoPackage …) with a class_id field, any CRS"
    )
    parser.add_argument(
        "--acquisition",
        choices=ACQUISITIONS,
        default="entropy",
        help="uncertainty measure (default: entropy)",
    )
    parser.add_argument(
        "--mc-passes", type=int, default=5, help="stochastic passes for mcdropout (default: 5)"
    )
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's, 512)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the model card's, 128)")
    parser.add_argument(
        "--batch-size", type=int, help="tiles per forward pass (default: 1 on CPU, 16 on CUDA)"
    )
    parser.add_argument("--patch-size", type=int, help="side of the ranked patches (default: the tile size)")
    add_patch_score(parser, "mean", "mean")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="keep per-tile outputs in OUT/.sial-cache so a later run with more clicks "
        "recomputes only the tiles they touch",
    )
    add_pixel_size(parser)
    parser.add_argument(
        "--skip-outside-clicks",
        action="store_true",
        help="ignore clicks outside the raster instead of stopping",
    )


def run(args: argparse.Namespace) -> int:
    from ..predict.job import PredictParameters, run_predict

    params = PredictParameters(
        raster=args.raster,
        out_dir=args.out,
        model_dir=args.model,
        clicks=args.clicks,
        acquisition=args.acquisition,
        mc_passes=args.mc_passes,
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        patch_score=args.patch_score,
        cache=args.cache,
        skip_outside_clicks=args.skip_outside_clicks,
        pixel_size=args.pixel_size,
    )
    print_report(run_predict(params, monitor("predict", args)))
    return 0
