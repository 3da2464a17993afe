"""round-speed: how long the dock waits after *Retrain*, step by step.

The path the dock takes, through the session API: the first map of a size² raster, the AC
update for a few clicks, then rounds, each followed by the redraw of a 1024² visible extent
(one window with 128 px of context, as the dock asks for it) and by the whole raster predicted
again. The clicks are spread over the raster on a grid, each of a class the map does not have
there (corrections; no labels needed).
Issue 23's targets: a round plus the redraw ≤ 3 s, the whole raster updated ≤ 15 s (2048², CPU)."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import rasterio

from backend.learn.disca import DiscaSettings
from backend.model.network import PRECISIONS
from backend.session.session import Session
from backend.system.runtime import resolve_device

from . import REPOSITORY
from .machine import describe_machine
from .report import header, save, say, started, status
from .scenes import crop_scene

NAME = "round-speed"
SUMMARY = "a DISCA round, the redraw of the visible extent and the whole raster, in seconds"
VISIBLE = 1024
"""Side of the visible extent the dock redraws first after a round."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=REPOSITORY / "models" / "dubai-landcover")
    parser.add_argument("--size", type=int, default=2048, help="side of the Dubai tile 8 crop (default 2048)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks before the first round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, help="SGD steps per round (default: DISCA's)")
    parser.add_argument("--crop", type=int, help="side of DISCA's training crops in px (default: DISCA's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="of the maps, as predict's (default: auto)",
    )


def timed(work: Callable[[], object]) -> float:
    begun = time.perf_counter()
    work()
    return round(time.perf_counter() - begun, 2)


def _retrain_into(session: Session, reports: list[Any]) -> None:
    reports.append(session.retrain())


def grid_clicks(session: Session, count: int, size: int, n_classes: int) -> None:
    """``count`` clicks on an even grid, each of the class after the one the map shows there."""
    with rasterio.open(session.outputs / "classes.tif") as classes:
        shown = classes.read(1)
    side = max(int(count**0.5 + 0.999), 1)
    for i in range(count):
        row = int((i // side + 0.5) * size / side)
        col = int((i % side + 0.5) * size / side)
        session.add_click(row, col, (int(shown[row, col]) + 1) % n_classes, source="simulated")


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    scene = crop_scene(args.size)
    settings = DiscaSettings() if args.steps is None else replace(DiscaSettings(), steps=args.steps)
    settings = settings if args.crop is None else replace(settings, crop=args.crop)
    header(f"{NAME}: {SUMMARY}", describe_machine(device), {"raster": scene.description})
    half = VISIBLE // 2
    middle = args.size // 2
    visible = (middle - half, middle - half, middle + half, middle + half)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.gpkg"
        session = Session.create(path, scene.path, args.model, args.device, settings=settings)
        status("the first map")
        predict = partial(session.predict, precision=args.precision)
        first = timed(predict)
        grid_clicks(session, args.clicks, args.size, session.bundle.card.n_classes)
        ac = timed(predict)
        say(f"first map {first:.2f} s, AC update for {args.clicks} clicks {ac:.2f} s")
        say(f"| round | round (s) | redraw {VISIBLE}² (s) | whole (s) | round + redraw | round + whole |")
        for round_ in range(1, args.rounds + 1):
            status(f"round {round_}")
            reports: list[Any] = []
            seconds = timed(partial(_retrain_into, session, reports))
            steps = reports[0].steps
            redraw = timed(lambda: predict(region=visible))
            whole = timed(predict)
            rows.append(
                {"round": round_, "steps": steps, "round_s": seconds, "redraw_s": redraw, "whole_s": whole}
            )
            say(
                f"| {round_} ({steps} steps) | {seconds:.2f} | {redraw:.2f} | {whole:.2f} | "
                f"{seconds + redraw:.2f} | {seconds + whole:.2f} |"
            )
            spot = args.size * round_ // (args.rounds + 1) + 7  # one more click, off the grid, for the next
            session.add_click(spot, spot, round_ % session.bundle.card.n_classes, source="simulated")
        session.close()
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "raster": scene.description,
        "first_map_s": first,
        "ac_update_s": ac,
        "settings": asdict(settings),
        "precision": args.precision,
        "rounds": rows,
    }
    save(NAME, data)
    return data
