"""``plot RUN… --out PNG``: several benchmark runs on one mIoU-against-clicks plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError

NAME = "plot"
HELP = "draw several benchmark runs on one mIoU-against-clicks plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="benchmark.json files (or their folders)")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--title")


def run(args: argparse.Namespace) -> int:
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
