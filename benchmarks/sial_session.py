"""sial-session: what an analyst's SIAL session costs, round by round, on a labelled raster.

The path the dock's *New model* and ``session create --sial --classes`` take: an untrained
network for the raster's classes, the recommended round settings
(``SialSettings.recommended()``), and after every round a full prediction of the raster. A
simulated analyst stands in for the person: each round it clicks the centres of the largest
missed regions of every class (SIAL's annotator, ``backend/agents.py``). Prints, per round, the
clicks so far, the seconds the round trained and the seconds the map took, and the mIoU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.learn.new_model import create_model_for_raster
from backend.learn.training_config import TrainingConfig
from backend.model.card import ClassInfo
from backend.predict.evaluation import read_labels, score
from backend.protocols.agents import sial_clicks
from backend.session.session import Session
from backend.session.settings import SialSettings
from backend.system.runtime import resolve_device

from .machine import describe_machine
from .report import header, save, say, started, status

NAME = "sial-session"
SUMMARY = "a SIAL session from an untrained network: seconds per round and per map, and mIoU"
REPOSITORY = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=REPOSITORY / "configs" / "dubai-landcover.json")
    parser.add_argument("--raster", type=int, default=0, help="which validation raster of the config")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clicks-per-class", type=int, default=3, help="clicks per class and round")
    parser.add_argument("--steps", type=int, help="training steps per round (default: the recommended)")
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    config = TrainingConfig.load(args.config)
    image, labels = config.validation[args.raster]
    truth = read_labels(labels, config.class_map)
    names = [name for name, _ in config.classes]
    settings = SialSettings.recommended()
    if args.steps is not None:
        settings = replace(settings, training=replace(settings.training, steps=args.steps))
    header(f"{NAME}: {SUMMARY}", describe_machine(device), {"raster": image, "rounds": str(args.rounds)})
    rows = []
    say(f"| round | clicks | round training (s) | map (s) | mIoU | IoU {' / '.join(names)} |")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session.gpkg"
        classes = [ClassInfo(i, name, color) for i, (name, color) in enumerate(config.classes)]
        model = create_model_for_raster(image, classes, Path(folder) / "session-model")
        session = Session.create(path, image, model, args.device, settings=settings)
        predicted, row = map_and_score(session, truth, names, 0, None)
        rows.append(row)
        for round_ in range(1, args.rounds + 1):
            status(f"round {round_}: clicking and training")
            for click in sial_clicks(predicted, truth, range(len(names)), args.clicks_per_class):
                session.add_click(click.row, click.col, click.class_id, source="simulated")
            seconds = session.retrain().seconds
            predicted, row = map_and_score(session, truth, names, round_, seconds)
            rows.append(row)
        session.close()
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "raster": image,
        "settings": {"rounds": args.rounds, "clicks_per_class": args.clicks_per_class, **asdict(settings)},
        "rounds": rows,
    }
    save(NAME, data)
    return data


def map_and_score(
    session: Session, truth: np.ndarray, names: list[str], round_: int, seconds: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The session's map of the whole raster, timed and scored; prints the round's row."""
    status(f"round {round_}: predicting the raster")
    begun = time.perf_counter()
    session.predict()
    map_seconds = time.perf_counter() - begun
    predicted = read_labels(session.outputs / "classes.tif")
    scores = score(predicted, truth, names)
    per_class = scores.per_class()
    clicks = len(session.click_list())
    trained = "" if seconds is None else f"{seconds:.1f}"
    say(
        f"| {round_} | {clicks} | {trained} | {map_seconds:.1f} | {scores.miou:.2f} | "
        + " / ".join(f"{per_class[n]:.1f}" for n in names)
        + " |"
    )
    row = {"round": round_, "clicks": clicks, "train_seconds": seconds, "map_seconds": round(map_seconds, 2)}
    return predicted, row | {"miou": round(scores.miou, 2), "per_class": per_class}
