"""The ``benchmark --protocol sial`` options and run: a network trained from clicks alone.

Options measured as harmful in the SIAL set-ups (docs/experiments/sial-setups.md) are not here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .terminal import monitor


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--config", type=Path, help="training config: training and validation rasters")
    group.add_argument("--iterations", type=int, default=6)
    group.add_argument("--steps", type=int, default=400, help="training steps per iteration")
    group.add_argument("--loss", choices=("ewdl", "ce"), default="ewdl")
    group.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a fresh network on all labels each iteration instead of carrying on",
    )
    group.add_argument("--crop", type=int, default=128, help="training crop side in px (default 128)")
    group.add_argument(
        "--average",
        type=float,
        default=0.0,
        help="end each iteration on a moving average of its weights, e.g. 0.998 (default: off)",
    )
    group.add_argument(
        "--colour-jitter",
        type=float,
        default=0.0,
        help="the dense training's colour jitter on the training crops, e.g. 0.15 (default: off)",
    )
    group.add_argument(
        "--adjust-prior",
        action="store_true",
        help="after each fit, correct the network for its labels' class shares against the imagery's, "
        "estimated as the mean of its own predictions (no ground truth)",
    )
    group.add_argument(
        "--clicks-per-class",
        type=int,
        default=1,
        help="clicks per class and image each iteration, in its largest missed regions (default 1)",
    )
    group.add_argument(
        "--first-clicks",
        choices=("regions", "untrained"),  # protocols.sial.FIRST_CLICKS, not imported here: it loads torch
        default="regions",
        help="what the first iteration's annotator sees: regions: no model yet, so it clicks the "
        "centres of each class's largest regions (default); untrained: the untrained network's output",
    )
    group.add_argument(
        "--expand",
        choices=("none", "slic", "felzenszwalb"),
        default="none",
        help="spread each click over its superpixel",
    )
    group.add_argument(
        "--sieve", default="0.8", help="drop expanded pixels the model confidently disputes ('none': keep)"
    )
    group.add_argument(
        "--segment-size", type=int, default=150, help="target pixels per superpixel (default 150)"
    )
    group.add_argument(
        "--dense-labels",
        action="store_true",
        help="no annotator: one fit of the same training on every labelled pixel, the dense "
        "reference at this protocol's budget (one iteration, no --expand)",
    )
    group.add_argument("--reference", type=Path, help="a densely trained bundle of the same network")
    group.add_argument("--image-size", type=int, default=512, help="the annotator's image size (default 512)")


def run(args: argparse.Namespace) -> int:
    from ..learn.sparse_training import SparseSettings
    from ..learn.training_config import TrainingConfig
    from ..protocols.sial import SialParameters, run_sial

    if args.config is None:
        raise UserError("the SIAL protocol needs --config (training and validation rasters)")
    if args.clicks_per_class < 1 or args.iterations < 1:
        raise UserError("--iterations and --clicks-per-class must be at least 1")
    expansion = _expansion(args)  # every setting is checked before the config is read
    training = SparseSettings(
        steps=args.steps,
        crop=args.crop,
        loss=args.loss,
        average=args.average,
        colour_jitter=args.colour_jitter,
        adjust_prior=args.adjust_prior,
        seed=args.seed,
    )
    training.check()
    params = SialParameters(
        config=TrainingConfig.load(args.config),
        out_dir=args.out,
        iterations=args.iterations,
        image_size=args.image_size,
        clicks_per_class=args.clicks_per_class,
        from_scratch=args.from_scratch,
        first_clicks=args.first_clicks,
        training=training,
        expansion=expansion,
        dense_labels=args.dense_labels,
        reference=args.reference,
        device=args.device,
        seed=args.seed,
    )
    result = run_sial(params, monitor("sial", args))
    _summarise(result, args.out)
    return 0


def _expansion(args: argparse.Namespace):
    from ..learn.superpixels import ExpansionSettings

    if args.expand == "none":
        return None
    try:
        sieve = None if args.sieve == "none" else float(args.sieve)
    except ValueError:
        raise UserError(f"--sieve takes a probability or 'none', not {args.sieve!r}") from None
    expansion = ExpansionSettings(method=args.expand, segment_size=args.segment_size, sieve=sieve)
    expansion.check()
    return expansion


def _summarise(result: dict, out: Path) -> None:
    if result["dense_labels"]:
        print(f"every labelled pixel: validation mIoU {result['final_miou']:.2f}")
    else:
        for it in result["iterations"]:
            before = it.get("prior_shift", {}).get("miou_before")
            print(
                f"iteration {it['iteration']}: {it['clicks']} clicks ({it['clicked_fraction_percent']:.4f} % "
                f"of the pixels), validation mIoU {it['validation_miou']:.2f}"
                + (f" ({before:.2f} before the prior correction)" if before is not None else "")
            )
    if result["reference_miou"]:
        print(
            f"dense reference: {result['reference_miou']:.2f} → {100 * result['share_of_dense']:.1f} % of it"
        )
    print(f"  {out / 'sial.json'}")
