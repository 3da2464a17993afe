"""``card MODEL``: measure a bundle on validation rasters and write its MODEL_CARD.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from .options import add_device
from .terminal import monitor

NAME = "card"
HELP = "measure a bundle on validation rasters and write its MODEL_CARD.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Records mIoU and per-class IoU without clicks and after simulated clicks in model.json."
    )
    parser.add_argument("model", type=Path, help="bundle folder")
    parser.add_argument(
        "--config", type=Path, help="its training config: validation rasters and class map from there"
    )
    parser.add_argument(
        "--validation",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABELS"),
        default=[],
        help="a validation pair (repeatable)",
    )
    parser.add_argument("--clicks", type=int, default=10, help="simulated clicks per raster (default 10)")
    parser.add_argument("--notes", type=Path, help="JSON with 'failure_modes' and 'notes' lists for the card")
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    from ..learn.training_config import TrainingConfig
    from ..protocols.modelcard import evaluate, record, write_model_card

    pairs = [tuple(p) for p in args.validation]
    class_map = None
    if args.config is not None:
        config = TrainingConfig.load(args.config)
        pairs = pairs or list(config.validation)
        class_map = config.class_map
    if not pairs:
        raise UserError("no validation rasters: give --config or --validation IMAGE LABELS")
    evaluation = evaluate(args.model, pairs, class_map, args.clicks, args.device, monitor("card", args))
    record(args.model, evaluation)
    extra = json.loads(args.notes.read_text()) if args.notes else {}
    path = write_model_card(args.model, extra.get("failure_modes", []), extra.get("notes", []))
    for key, entry in evaluation.items():
        if key.startswith("clicks_"):
            print(f"{key.replace('_', ' ')}: mIoU {entry['miou']:.2f} {entry['per_class_iou']}")
    print(f"wrote {path}")
    return 0
