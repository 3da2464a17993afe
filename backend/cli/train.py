"""``train CONFIG --out DIR``: a model bundle from image/label rasters (resumes where it stopped)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_device
from .terminal import monitor

NAME = "train"
HELP = "train a model bundle from image/label rasters (resumes from its last checkpoint)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Settings, data and seed come from the JSON config (see configs/); the best bundle on the "
        "validation rasters is written to --out as training goes."
    )
    parser.add_argument("config", type=Path, help="training config (JSON)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    parser.add_argument("--work", type=Path, help="checkpoints and logs (default: runs/<bundle name>)")
    add_device(parser)
    parser.add_argument("--steps", type=int, help="override the config's number of steps")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..learn.training import CHECKPOINT, command_line, train
    from ..learn.training_config import TrainingConfig

    config = TrainingConfig.load(args.config)
    if args.steps is not None:
        config.steps = args.steps
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path("runs") / args.out.name
    if args.restart:
        (work / CHECKPOINT).unlink(missing_ok=True)
    bundle = train(config, args.out, work, args.device, monitor("train", args), command_line())
    validation = bundle.card.provenance.get("validation", {})
    miou, per_class = validation.get("miou", "n/a"), validation.get("per_class_iou", "")
    print(f"wrote {bundle.directory}: validation mIoU {miou} {per_class}")
    return 0
