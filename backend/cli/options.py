"""Options several commands share: the device, and DISCA's retraining settings."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any


def add_device(parser: argparse.ArgumentParser) -> None:
    from ..system.runtime import DEVICE_CHOICES

    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="default: auto (the GPU if there is one)"
    )


def add_precision(parser: argparse.ArgumentParser) -> None:
    from ..model.network import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bfloat16 on a CPU that computes it natively, float16 on a GPU; "
        "fp32: float32 everywhere (the same maps on every machine, slower)",
    )


def add_patch_score(parser: argparse.ArgumentParser, default: str | None, default_says: str) -> None:
    from ..predict.patch_scores import PATCH_SCORES

    parser.add_argument(
        "--patch-score",
        choices=PATCH_SCORES,
        default=default,
        help="how patches are ranked: mean, the patch's mean uncertainty; class-weighted, each "
        "pixel's uncertainty weighted by how rare its class is on the map (for clicks that only "
        "correct, AC) "
        f"(default: {default_says})",
    )


def add_disca_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DISCA retraining")
    group.add_argument(
        "--disca-steps",
        type=int,
        help="SGD steps per round (default: 10 after fewer than 5 new clicks, 5 after a batch of 5 or more)",
    )
    group.add_argument("--disca-lr", type=float, help="learning rate (default 2e-4)")
    group.add_argument(
        "--anchor-weight",
        type=float,
        help="λ, the weight of the L1 anchor to the initial prediction (default 3)",
    )
    group.add_argument("--click-loss", choices=("ce", "ewdl"), help="cross-entropy (DIAL) or EWDL (SIAL)")
    group.add_argument(
        "--class-balance",
        type=float,
        metavar="B",
        help="a clicked class's pixels weigh (their number) ** -B in the click term: 0 is DIAL's "
        "mean over the clicks, 1 weighs every class the same (default 0.5)",
    )
    group.add_argument(
        "--dial-settings", action="store_true", help="DIAL's published settings (10 steps, lr 2e-6, λ 1)"
    )
    group.add_argument(
        "--guard",
        action=argparse.BooleanOptionalAction,
        help="roll back a round after which more of the clicks are wrong than before it (the "
        "default), or --no-guard: keep every round. A session keeps its last round's",
    )
    group.add_argument(
        "--spread",
        action=argparse.BooleanOptionalAction,
        help="a click's class also labels its SLIC superpixel (about 150 pixels of like colour; "
        "the default), or --no-spread: each click's pixel alone. A session keeps its last round's",
    )
    group.add_argument(
        "--hold-classes",
        action=argparse.BooleanOptionalAction,
        help="after a round, keep off the map the classes no click names and the map before it "
        "lacked or had on under 0.1 %% of its pixels (the default), or --no-hold-classes. A "
        "session keeps its last round's",
    )
    group.add_argument(
        "--weight-average",
        type=float,
        metavar="BETA",
        help="the map comes from the rounds' weights averaged, BETA × the previous average + "
        "(1 − BETA) × the round's own, while training continues from the round's own (default "
        "0.5; 0: each round's own weights, as before). A session keeps its last round's",
    )


def disca_settings(args: argparse.Namespace, base: Any = None) -> Any:
    """The DISCA settings the options ask for, on top of ``base`` (default: DISCA's defaults)."""
    from ..learn.disca import DiscaSettings

    settings = DiscaSettings.dial() if args.dial_settings else (base or DiscaSettings())
    changes = {
        "steps": args.disca_steps,
        "learning_rate": args.disca_lr,
        "anchor_weight": args.anchor_weight,
        "click_loss": args.click_loss,
        "class_balance": args.class_balance,
        "guard": getattr(args, "guard", None),
        "spread": getattr(args, "spread", None),
        "hold_classes": getattr(args, "hold_classes", None),
        "weight_average": getattr(args, "weight_average", None),
    }
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def add_pixel_size(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--pixel-size",
        type=float,
        metavar="METRES",
        help="the raster's pixel size in metres, for one without a CRS: with the model card's "
        "gsd_m it decides whether the raster is read resampled (a CRS, when there is one, says "
        "it already)",
    )
