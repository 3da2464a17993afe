"""``python -m backend COMMAND …`` (the CLI contract): one module per command in this package,
each with ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

Bad input ends with one line on stderr and exit status 2; no traceback unless SIAL_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from types import ModuleType

from ..errors import Cancelled, UserError
from . import (
    benchmark,
    card,
    confidnet,
    create_model,
    demo,
    info,
    plot,
    predict,
    predict_many,
    session,
    train,
)
from .terminal import clear_progress_line, first_line, quiet_gdal

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_CANCELLED = 130
COMMANDS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        predict,
        predict_many,
        demo,
        train,
        benchmark,
        plot,
        session,
        card,
        confidnet,
        info,
        create_model,
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Interactive and active-learning segmentation of georeferenced rasters.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = bool(os.environ.get("SIAL_DEBUG"))
    if not debug:
        warnings.simplefilter("ignore")
        quiet_gdal()
    args = build_parser().parse_args(argv)
    from ..system.runtime import limit_gdal_cache, tune_allocator

    limit_gdal_cache()
    tune_allocator()
    try:
        return COMMANDS[args.command].run(args)
    except UserError as exc:
        clear_progress_line(args)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Cancelled, KeyboardInterrupt):
        clear_progress_line(args)
        print("cancelled: no output was left half-written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        clear_progress_line(args)
        if debug:
            traceback.print_exc()
        from ..system.diskspace import is_disk_full

        if is_disk_full(exc):
            print(f"error: the disk is full: {first_line(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(
            f"internal error: {type(exc).__name__}: {exc} (a bug: rerun with SIAL_DEBUG=1 and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
