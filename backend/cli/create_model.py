"""``create-model --out DIR --classes a,b``: a freshly initialised model bundle (a start for
training, or for tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

NAME = "create-model"
HELP = "write a freshly initialised model bundle (a start for training, or for tests)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument(
        "--classes", required=True, help="comma-separated class names, optionally name:#rrggbb"
    )
    parser.add_argument("--name", help="model name (default: the folder's name)")
    parser.add_argument("--bands", default="1,2,3", help="1-based raster bands to read (default: 1,2,3)")
    parser.add_argument("--architecture", default="Linknet", help="segmentation-models-pytorch architecture")
    parser.add_argument("--encoder", default="resnet34", help="segmentation-models-pytorch encoder")
    parser.add_argument("--no-clicks", action="store_true", help="no click channels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")


def run(args: argparse.Namespace) -> int:
    from ..learn.new_model import fresh_card, parse_classes
    from ..model.bundle import create_bundle, save_bundle

    try:
        bands = tuple(int(b) for b in args.bands.split(","))
    except ValueError:
        raise UserError(f"--bands must be comma-separated band numbers, not '{args.bands}'") from None
    card = fresh_card(
        parse_classes(args.classes),
        args.name or args.out.name,
        bands,
        architecture=args.architecture,
        encoder=args.encoder,
        clicks=not args.no_clicks,
        seed=args.seed,
    )
    bundle = create_bundle(card, seed=args.seed)
    target = save_bundle(bundle, args.out, dtype=args.dtype)
    print(
        f"wrote {target} ({card.architecture}/{card.encoder}, "
        f"{card.in_channels} input channels, {card.n_classes} classes)"
    )
    return 0
