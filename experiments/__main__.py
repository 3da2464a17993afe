"""``python -m experiments STUDY [options]``; no argument lists them.

Each study saves its figures to benchmarks/out/<name>.json, as the benchmarks do.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from rasterio.errors import NotGeoreferencedWarning

from backend.errors import UserError
from backend.system.runtime import limit_gdal_cache, tune_allocator

from . import prior, queries, seeds

STUDIES: dict[str, ModuleType] = {m.NAME: m for m in (queries, prior, seeds)}


def main(argv: Sequence[str] | None = None) -> int:
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    limit_gdal_cache()
    tune_allocator()
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="study", metavar="STUDY")
    for name, module in STUDIES.items():
        sub = commands.add_parser(
            name,
            help=module.SUMMARY,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    if args.study is None:
        parser.print_help()
        return 0
    try:
        STUDIES[args.study].run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
