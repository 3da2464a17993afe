"""What the command line shows: a one-line progress display, ``note:`` lines, and quiet GDAL."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from ..progress import Monitor


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


def monitor(label: str, args: argparse.Namespace) -> Monitor:
    """Progress on stderr (unless --quiet) and the job's notices as ``note:`` lines."""
    progress = TerminalProgress(label, not args.quiet)

    def notify(text: str) -> None:
        if progress.tty and progress.enabled:
            sys.stderr.write("\r" + " " * 78 + "\r")
        print(f"note: {text}", file=sys.stderr, flush=True)

    return Monitor(progress, None, notify)


def print_report(report: Any) -> None:
    """A prediction's summary: its notices on stderr, then what it did and the files it wrote."""
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


def quiet_gdal() -> None:
    """GDAL's own warnings and errors (libjpeg's, a damaged block's) stay off the terminal: every
    failure reaches the user as one ``error:`` line. SIAL_DEBUG=1 shows them again."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def clear_progress_line(args: argparse.Namespace) -> None:
    if not getattr(args, "quiet", False) and sys.stderr.isatty():
        sys.stderr.write("\n")
