"""``confidnet MODEL --config CONFIG``: a ConfidNet head for a bundle (the ``confidnet``
acquisition function), trained on the model's own outputs with the model frozen."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device
from .terminal import monitor

NAME = "confidnet"
HELP = "train a ConfidNet head for a bundle (the 'confidnet' acquisition function)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Trains on the model's own outputs over the config's training rasters (model frozen)."
    )
    parser.add_argument("model", type=Path, help="bundle folder (updated in place unless --out)")
    parser.add_argument("--config", required=True, type=Path, help="training config: rasters and class map")
    parser.add_argument("--out", type=Path, help="write the bundle with its head here instead")
    parser.add_argument("--steps", type=int, default=600)
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    from ..learn.confidnet import train_confidnet
    from ..learn.training import command_line
    from ..learn.training_config import TrainingConfig
    from ..model.bundle import load_bundle, save_bundle

    config = TrainingConfig.load(args.config)
    bundle = load_bundle(args.model)
    report = train_confidnet(
        bundle,
        config.train,
        config.class_map,
        args.steps,
        device=args.device,
        monitor=monitor("confidnet", args),
    )
    provenance = dict(bundle.card.provenance)
    provenance["confidnet"] = {
        "steps": args.steps,
        "rasters": [Path(i).name for i, _ in config.train],
        "command": command_line(),
    } | {k: round(v, 4) for k, v in report.items()}
    bundle.card = bundle.card.with_updates(provenance=provenance)
    target = save_bundle(bundle, args.out or args.model)
    print(f"wrote {target}: ConfidNet loss {report['first_loss']:.4f} → {report['last_loss']:.4f}")
    return 0
