"""dock: the dock's pattern — N clicks on the current map, then one Retrain — across images.

The cases are the validation tiles (Dubai 2 and 6), the three LoveDA crops (another continent
and sensor, re-coded to the Dubai classes) and Tanzania at its own 7.7 cm (the building model).
Each pattern is ``largest:N`` (the N largest errors of any class) or ``per-class:K`` (each
class's K largest missed regions). For each case and pattern: mIoU (building IoU on Tanzania)
before the clicks, with them (AC), after the round, and whether the round guard kept it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.protocols.dock import DockParameters, run_dock

from . import OUT
from .domain_adaptation import LOVEDA_PIXEL, LOVEDA_TO_DUBAI, REPOSITORY, add_loveda_pixel, prepare_tanzania
from .machine import describe_machine
from .options import add_disca_seed, add_disca_steps, with_steps
from .report import header, save, say, started
from .scenes import SHARED_DATA

NAME = "dock"
SUMMARY = "the dock's pattern (a few clicks, then one round) on Dubai, LoveDA and Tanzania"
CASES = ("dubai-2", "dubai-6", "loveda-0", "loveda-1", "loveda-2", "tanzania")
TANZANIA_PIXEL = 0.0774800032377243


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument(
        "--patterns",
        default="largest:10,per-class:1",
        help="comma-separated largest:N and per-class:K (default largest:10,per-class:1)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-guard", action="store_true", help="keep every round")
    parser.add_argument("--adapt-statistics", action="store_true", help="AdaBN on each raster first")
    parser.add_argument(
        "--no-spread", action="store_true", help="learn each click's pixel alone, not its superpixel"
    )
    parser.add_argument(
        "--no-hold-classes", action="store_true", help="let a round put classes no click names on the map"
    )
    parser.add_argument("--device", default="auto")
    add_loveda_pixel(parser)
    add_disca_seed(parser)
    add_disca_steps(parser)


def case_inputs(
    name: str, loveda_pixel: float = LOVEDA_PIXEL
) -> tuple[Path, Path, Path, dict[int, int] | None, str | None, float | None]:
    """Raster, labels, model, label re-coding, the class scored alone (None: mIoU) and the
    raster's pixel size where it has no CRS (None: its CRS says, or read as it is)."""
    models = REPOSITORY / "models"
    if name.startswith("dubai-"):
        tile = SHARED_DATA / "dubai" / f"tile_{name.split('-')[1]}"
        return (
            Path(f"{tile}_image.tif"),
            Path(f"{tile}_labels.tif"),
            models / "dubai-landcover",
            None,
            None,
            None,
        )
    if name.startswith("loveda-"):
        i = name.split("-")[1]
        folder = SHARED_DATA / "loveda"
        return (
            folder / "images" / f"{i}.png",
            folder / "labels" / f"{i}.png",
            models / "dubai-landcover",
            LOVEDA_TO_DUBAI,
            None,
            loveda_pixel or None,
        )
    image, labels = prepare_tanzania(TANZANIA_PIXEL)
    return image, labels, models / "dubai-buildings", None, "building", None


def parse_patterns(text: str) -> list[tuple[str, int]]:
    patterns = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, count = item.partition(":")
        if kind not in ("largest", "per-class") or not count.isdigit() or int(count) < 1:
            raise UserError(f"a pattern is largest:N or per-class:K, not {item!r}")
        patterns.append((kind, int(count)))
    return patterns


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    if not (SHARED_DATA / "dubai").is_dir():
        raise UserError(f"{SHARED_DATA} is absent: the benchmark images live there")
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := set(wanted) - set(CASES):
        raise UserError(f"unknown case(s) {', '.join(sorted(unknown))}: choose from {', '.join(CASES)}")
    patterns = parse_patterns(args.patterns)
    hold = not args.no_hold_classes
    settings = DiscaSettings(
        guard=not args.no_guard, spread=not args.no_spread, hold_classes=hold, seed=args.seed
    )
    settings = with_steps(settings, args.disca_steps)
    from backend.system.runtime import resolve_device

    header("the dock's pattern", describe_machine(resolve_device(args.device)), {"disca": str(settings)})
    rows = []
    for name in wanted:
        image, labels, model, class_map, key, pixel = case_inputs(name, args.loveda_pixel)
        for kind, count in patterns:
            out = OUT / "dock" / f"{name}-{kind}-{count}"
            result = run_dock(
                DockParameters(
                    image, labels, out, clicks=count, pattern=kind, per_class=count, rounds=args.rounds,
                    model_dir=model, device=args.device, class_map=class_map, guard=not args.no_guard,
                    disca=settings, adapt_statistics=args.adapt_statistics, pixel_size=pixel,
                )
            )  # fmt: skip
            for r in result["rounds"]:
                row = {
                    "case": name, "pattern": f"{kind}:{count}", "round": r["round"], "clicks": r["clicks"],
                    "before": r["miou_before_clicks"], "with_clicks": r["miou_with_clicks"],
                    "after_round": r["miou_after_round"], "kept": r["kept"], "seconds": r["retrain_seconds"],
                }  # fmt: skip
                if key is not None:
                    row["after_round_iou"] = r["per_class_after_round"][key]
                rows.append(row)
                say(
                    f"{name:>9} {kind:>9}:{count:<2} round {r['round']}: {r['miou_before_clicks']:6.2f} → "
                    f"{r['miou_with_clicks']:6.2f} (AC) → {r['miou_after_round']:6.2f} "
                    f"({'kept' if r['kept'] else 'rolled back'}, {r['retrain_seconds']:.1f} s)"
                )
    data = {"benchmark": NAME, "started": begun, "settings": str(settings), "rows": rows}
    save(NAME, data)
    return data
