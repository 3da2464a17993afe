"""``predict-many INPUT… --model DIR --out OUT``: many rasters, or one huge mosaic, on a Dask cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_device, add_precision
from .terminal import monitor

NAME = "predict-many"
HELP = "predict many rasters or one huge mosaic on a Dask cluster (resumable)"
DEFAULT_BLOCK = 4096  # backend.cluster.planning.DEFAULT_BLOCK, without importing the engine here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..predict.uncertainty import ACQUISITIONS

    parser.description = (
        "Predicts every input on a Dask cluster (a local one by default). A raster larger than a "
        "block is split into blocks that blend exactly as one `predict` would. Writes OUT/<input>/ "
        "per input, VRT mosaics, and OUT/run.json; a rerun skips the finished blocks."
    )
    parser.add_argument("inputs", nargs="+", help="rasters, folders of rasters, glob patterns or VRT mosaics")
    parser.add_argument("--model", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument("--acquisition", choices=ACQUISITIONS, default="entropy", help="default: entropy")
    parser.add_argument(
        "--mc-passes", type=int, default=5, help="stochastic passes for mcdropout (default: 5)"
    )
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the model card's)")
    parser.add_argument("--overlap", type=int, help="tile overlap in pixels (default: the model card's)")
    parser.add_argument(
        "--batch-size", type=int, help="tiles per forward pass (default: 1 on CPU, 16 on CUDA)"
    )
    parser.add_argument("--patch-size", type=int, help="side of the ranked patches (default: the tile size)")
    parser.add_argument(
        "--block",
        type=int,
        default=DEFAULT_BLOCK,
        help=f"block side in pixels, a multiple of the patch size (default: {DEFAULT_BLOCK})",
    )
    cluster = parser.add_argument_group("Dask cluster")
    cluster.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="an existing cluster's scheduler")
    cluster.add_argument(
        "--workers", type=int, help="local cluster: worker processes (default: sized to the machine)"
    )
    cluster.add_argument(
        "--torch-threads",
        type=int,
        help="torch threads per worker (default: the host's cores / its task slots)",
    )
    cluster.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds to reach the scheduler (default: 5)"
    )


def run(args: argparse.Namespace) -> int:
    from ..cluster.job import run_predict_many
    from ..cluster.parameters import ManyParameters

    params = ManyParameters(
        inputs=args.inputs,
        out_dir=args.out,
        model_dir=args.model,
        acquisition=args.acquisition,
        mc_passes=args.mc_passes,
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        block=args.block,
        scheduler=args.scheduler,
        workers=args.workers,
        torch_threads=args.torch_threads,
        connect_timeout=args.connect_timeout,
    )
    report = run_predict_many(params, monitor("predict-many", args))
    run = report.run
    blocks = run["blocks"]
    print(
        f"{len(run['inputs'])} input(s), {blocks['total']} block(s): {blocks['computed']} computed, "
        f"{blocks['reused']} already done, on {run['cluster']['scheduler'] or 'no cluster'} "
        f"in {run['seconds']['total']:.1f} s"
    )
    for entry in run["inputs"]:
        print(f"  {report.out_dir / entry['classes']}")
    for name in run.get("files", []):
        if name.endswith(".vrt"):
            print(f"  {report.out_dir / name}")
    print(f"  {report.run_file}")
    sys.stdout.flush()
    return 0
