"""clicks: DIAL's protocol on the Dubai validation tiles, with the bundled 5-class model.

For each validation tile (2 and 6): AC and DISCA, patches in entropy order and in random order,
one simulated click per patch (DIAL's annotator), 50 clicks. It reports mIoU before and after 10,
25 and 50 clicks, entropy against random, seconds per click (AC) and per retraining round
(DISCA). DISCA runs twice, with the engine's defaults and with DIAL's published settings.
``--tune`` first searches the learning rate and λ on tile 2 with 25 clicks.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.protocols.dial import BenchmarkParameters, plot_runs, run_benchmark
from backend.system.runtime import resolve_device

from . import OUT
from .machine import describe_machine
from .options import add_disca_steps, with_steps
from .report import header, save, say, started
from .scenes import SHARED_DATA

NAME = "clicks"
SUMMARY = "DIAL's protocol on Dubai tiles 2 and 6: AC/DISCA, entropy/random, 50 clicks"
REPOSITORY = Path(__file__).resolve().parent.parent
MARKS = (0, 10, 25, 50)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=REPOSITORY / "models" / "dubai-landcover")
    parser.add_argument("--tiles", default="2,6")
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--device", default="auto")
    add_disca_steps(parser)
    parser.add_argument("--modes", default="ac,disca,dial")
    parser.add_argument("--orders", default="entropy,random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tune", action="store_true", help="grid-search DISCA's learning rate and λ on tile 2 first"
    )


def tile(n: int) -> tuple[Path, Path]:
    image = SHARED_DATA / "dubai" / f"tile_{n}_image.tif"
    if not image.is_file():
        raise UserError(f"{image} is missing: this benchmark needs ../shared/data")
    return image, SHARED_DATA / "dubai" / f"tile_{n}_labels.tif"


def miou_at(result: dict[str, Any], clicks: int) -> float | None:
    if clicks == 0:
        return result["initial_miou"]
    return next((s["miou"] for s in result["steps"] if s["clicks"] == clicks), None)


def one_run(
    model: Path,
    n: int,
    mode: str,
    order: str,
    clicks: int,
    settings: DiscaSettings,
    device: str,
    seed: int,
    label: str,
) -> dict[str, Any]:
    image, labels = tile(n)
    engine_mode = "disca" if mode in ("disca", "dial") else "ac"
    params = BenchmarkParameters(
        raster=image,
        labels=labels,
        out_dir=OUT / "clicks" / f"tile{n}-{label}-{order}",
        clicks=clicks,
        mode=engine_mode,
        order=order,
        model_dir=model,
        device=device,
        seed=seed,
        disca=settings,
    )
    return run_benchmark(params)


def tune(model: Path, device: str, seed: int) -> DiscaSettings:
    """Learning rate, then λ, by mIoU after 25 clicks on tile 2 (entropy order)."""
    best, best_score = DiscaSettings(), -1.0
    for rate in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3):
        candidate = replace(DiscaSettings(), learning_rate=rate)
        result = one_run(model, 2, "disca", "entropy", 25, candidate, device, seed, f"tune-lr{rate:g}")
        say(f"tune: lr {rate:g}, λ {candidate.anchor_weight:g} → mIoU {result['final_miou']:.2f}")
        if result["final_miou"] > best_score:
            best, best_score = candidate, result["final_miou"]
    for weight in (0.0, 1.0, 10.0):
        candidate = replace(best, anchor_weight=weight)
        result = one_run(model, 2, "disca", "entropy", 25, candidate, device, seed, f"tune-lambda{weight:g}")
        say(f"tune: lr {candidate.learning_rate:g}, λ {weight:g} → mIoU {result['final_miou']:.2f}")
        if result["final_miou"] > best_score:
            best, best_score = candidate, result["final_miou"]
    chosen = f"lr {best.learning_rate:g}, λ {best.anchor_weight:g}"
    say(f"tune: chosen {chosen} (mIoU {best_score:.2f} after 25 clicks)")
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    header(
        f"{NAME}: {SUMMARY}", describe_machine(device), {"model": str(args.model), "clicks": str(args.clicks)}
    )
    tuned = tune(args.model, args.device, args.seed) if args.tune else DiscaSettings()
    tuned = with_steps(tuned, args.disca_steps)
    configs = {"ac": tuned, "disca": tuned, "dial": DiscaSettings.dial()}
    results: dict[str, dict[str, Any]] = {}
    say(f"{'tile':>4} {'mode':>6} {'order':>8} " + " ".join(f"{m:>7}" for m in MARKS) + "  s/click  s/round")
    for n in (int(t) for t in args.tiles.split(",")):
        for mode in (m.strip() for m in args.modes.split(",")):
            for order in (o.strip() for o in args.orders.split(",")):
                if mode == "dial" and order != "entropy":
                    continue
                result = one_run(
                    args.model, n, mode, order, args.clicks, configs[mode], args.device, args.seed, mode
                )
                results[f"tile{n}-{mode}-{order}"] = result
                marks = " ".join(
                    f"{v:7.2f}" if (v := miou_at(result, m)) is not None else "    n/a" for m in MARKS
                )
                rounds = [s["retrain_seconds"] for s in result["steps"] if s["retrain_seconds"] is not None]
                per_round = f"{np.mean(rounds):7.2f}" if rounds else "      -"
                say(f"{n:>4} {mode:>6} {order:>8} {marks}  {result['seconds_per_click']:7.2f}  {per_round}")
    summary = {}
    for key in {k.split("-", 1)[1] for k in results}:
        runs = [v for k, v in results.items() if k.endswith(key)]
        summary[key] = {
            m: float(np.mean([miou_at(r, m) for r in runs]))
            for m in MARKS
            if all(miou_at(r, m) is not None for r in runs)
        }
    for key, marks in sorted(summary.items()):
        say(f"mean {key:>16} " + " ".join(f"{v:7.2f}" for v in marks.values()))
    for n in (int(t) for t in args.tiles.split(",")):
        plot_runs(
            [v for k, v in results.items() if k.startswith(f"tile{n}-")],
            OUT / "clicks" / f"tile{n}.png",
            f"Dubai tile {n}: mIoU against simulated clicks",
        )
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "tuned": asdict(tuned),
        "dial": asdict(DiscaSettings.dial()),
        "summary": summary,
        "runs": {
            k: {
                "initial": v["initial_miou"],
                "steps": v["steps"],
                "seconds_per_click": v["seconds_per_click"],
            }
            for k, v in results.items()
        },
    }
    save(NAME, data)
    return data
