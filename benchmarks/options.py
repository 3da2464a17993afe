"""Command-line options several benchmarks share, so they read the same everywhere."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from backend.system.runtime import DEVICE_CHOICES

if TYPE_CHECKING:  # torch is imported only by the benchmarks that train
    from backend.learn.disca import DiscaSettings


def add_model_and_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        help="model bundle folder (default: models/dubai-landcover, else an untrained LinkNet/resnet34)",
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default: auto (the GPU if there is one)"
    )


def add_raster(parser: argparse.ArgumentParser, default_size: int) -> None:
    parser.add_argument(
        "--raster",
        type=Path,
        help=f"raster to use (default: a {default_size}² scene from Dubai tile 8, mirrored if larger)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=default_size,
        help=f"side of the default crop (or of the sample scene without shared data), default {default_size}",
    )


def add_tiling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, help="tile size (default: the model card's)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: the model card's)")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass (default: the engine's)")


def add_disca_steps(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disca-steps",
        type=int,
        metavar="N",
        help="SGD steps per DISCA round (default: the engine's, by the round's new clicks); the dock's "
        "'Steps per round'",
    )


def add_disca_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="DISCA's seed (its crops and click drops)")


def with_steps(settings: DiscaSettings, steps: int | None) -> DiscaSettings:
    """``settings`` with ``--disca-steps`` applied when it was given."""
    return settings if steps is None else replace(settings, steps=steps)
