"""``python -m benchmarks BENCHMARK [options]`` (pipeline, memory, predict_many, …); none lists them."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from rasterio.errors import NotGeoreferencedWarning

from backend.errors import UserError
from backend.system.runtime import limit_gdal_cache, tune_allocator

from . import (
    acquisition,
    clicks,
    dock_pattern,
    domain_adaptation,
    memory,
    pipeline,
    predict_many,
    round_speed,
    sial_session,
)
from .options import add_model_and_device

BENCHMARKS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        pipeline,
        memory,
        acquisition,
        clicks,
        domain_adaptation,
        dock_pattern,
        sial_session,
        predict_many,
        round_speed,
    )
}
ALL_ORDER = ("pipeline", "acquisition", "memory")
"""``all`` runs the slow one (minutes per size) last."""
SHARED = ("model", "device", "sizes", "skip_build", "gdal_cachemax")
"""Options of ``all`` that it hands to every benchmark that has them."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Performance benchmarks: print figures measured in one run and save them to "
        "benchmarks/out/<name>.json. Targets: docs/architecture.md, 'Performance targets'.",
    )
    commands = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    parsers = {}
    for name, module in BENCHMARKS.items():
        sub = commands.add_parser(
            name,
            help=module.SUMMARY,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        parsers[name] = sub
    every = commands.add_parser(
        "all",
        help="all three: pipeline, acquisition, then memory",
        description="Every benchmark with its defaults, sharing the options below.",
    )
    add_model_and_device(every)
    every.add_argument("--sizes", help="memory benchmark sizes (default: its own)")
    every.add_argument("--skip-build", action="store_true", help="memory benchmark: cached scenes only")
    every.add_argument("--gdal-cachemax", type=int, metavar="MB", help="memory benchmark: GDAL_CACHEMAX")
    parsers["all"] = every
    return parser, parsers


def run_all(args: argparse.Namespace, parsers: dict[str, argparse.ArgumentParser]) -> None:
    """Each benchmark with its own defaults, overridden by the shared options given to ``all``."""
    for name in ALL_ORDER:
        module = BENCHMARKS[name]
        own = parsers[name].parse_args([])
        for key in SHARED:
            value = getattr(args, key, None)
            if hasattr(own, key) and value not in (None, False):
                setattr(own, key, value)
        module.run(own)
        print(flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    limit_gdal_cache()  # the same process set-up as the CLI's
    tune_allocator()
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    if args.benchmark is None:
        print(parser.format_help())
        for name, sub in parsers.items():
            print(f"---- {name} " + "-" * 60)
            print(sub.format_help())
        return 0
    try:
        if args.benchmark == "all":
            run_all(args, parsers)
        else:
            BENCHMARKS[args.benchmark].run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
