"""seeds: several SIAL runs on the same labels, alone, picked by held-out points, and as an ensemble.

A network trained from scratch on a few thousand clicks lands in a different place with every
seed (its initial weights and its crops), by several mIoU points even on identical labels. Two
ways to stop a session depending on that draw, both measured here on runs made with
``benchmark --protocol sial --first-clicks regions`` (whose labels do not depend on the seed):

- **pick**: score every network on a few hundred held-out reference points of the training
  imagery, drawn at random (an accuracy-assessment sample, as a map producer would take), and
  keep the best. The dense reference was likewise kept as its best checkpoint on validation
  rasters, with far more labels.
- **ensemble**: average the networks' class probabilities (and pay their inference k times).

Each subset of ``--size`` runs is one such session; the figures are the mean, lowest and highest
over all subsets. The networks are scored as the runs left them, minus any class-prior
correction (``--corrected`` keeps it). The held-out points are drawn from all labelled pixels,
so about as many of them as the runs' labels cover (1.2 % on Dubai) are expected to fall on
them; they are not added to the clicks.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import UserError
from backend.io.outputs import CLASS_NODATA
from backend.io.raster import MemoryRasterSource, RasterSource
from backend.learn.prior_shift import PriorShift
from backend.learn.training_config import TrainingConfig
from backend.model.bundle import load_bundle
from backend.predict.evaluation import (
    LABEL_NODATA,
    Scores,
    confusion_matrix,
    predict_in_memory,
    read_labels,
    score,
)
from backend.predict.inference import Predictor
from backend.system.runtime import resolve_device
from benchmarks.machine import describe_machine
from benchmarks.report import header, save, say, started, status

NAME = "seeds"
SUMMARY = "SIAL runs on the same labels: each alone, the one held-out points pick, their ensemble"
REPOSITORY = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of SIAL runs on the same labels")
    parser.add_argument("--config", type=Path, default=REPOSITORY / "configs" / "dubai-landcover.json")
    parser.add_argument("--points", type=int, default=500, help="held-out reference points (default 500)")
    parser.add_argument("--size", type=int, default=3, help="networks per session (default 3)")
    parser.add_argument("--corrected", action="store_true", help="keep the runs' class-prior corrections")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out points")
    parser.add_argument("--device", default="auto")


def _same_labels(runs: list[Path]) -> list[dict[str, Any]]:
    """The runs' records, refusing runs whose labels may differ (their ensemble would count more
    clicks than any of them): only a first iteration placed before any model is the same for
    every seed; later iterations click where each network errs."""
    missing = [str(run) for run in runs if not (run / "sial.json").is_file() or not (run / "model").is_dir()]
    if missing:
        raise UserError(f"not the output folder of a finished SIAL run: {', '.join(missing)}")
    records = [json.loads((run / "sial.json").read_text()) for run in runs]
    labels = {
        (r.get("first_clicks"), r["iterations"][0]["clicks"], r["iterations"][0]["added_pixels"])
        for r in records
    }
    if (
        len(labels) > 1
        or records[0].get("first_clicks") != "regions"
        or any(len(r["iterations"]) > 1 for r in records)
    ):
        raise UserError(
            "the runs must share their labels: one-iteration runs made with --first-clicks regions"
        )
    return records


def held_out_points(truths: list[np.ndarray], count: int, seed: int) -> list[np.ndarray]:
    """Flat indices of ``count`` labelled pixels drawn uniformly over all the rasters, per raster."""
    rng = np.random.default_rng(seed)
    labelled = [np.flatnonzero(t.ravel() != LABEL_NODATA) for t in truths]
    sizes = np.array([len(i) for i in labelled], dtype=np.float64)
    per_raster = rng.multinomial(count, sizes / sizes.sum())
    return [np.sort(rng.choice(i, n, replace=False)) for i, n in zip(labelled, per_raster, strict=True)]


def _score_networks(args, records, config, device, points, point_truth, validation_truths):
    """Each run's network on the held-out points and on the validation rasters (keeping its
    probabilities there, for the ensembles)."""
    names: list[str] = []
    point_scores, validation_scores, probabilities = [], [], []  # per network
    for run, record in zip(args.runs, records, strict=True):
        bundle = load_bundle(run / "model")
        prior = record["iterations"][-1].get("prior_shift")
        if prior and not args.corrected:
            PriorShift.from_json(prior).remove(bundle.network)
        names = [c.name for c in bundle.card.classes]
        predictor = Predictor(bundle, device, owns_network=True)
        status(f"{run.name}: the held-out points")
        at_points = []
        for (image, _), where in zip(config.train, points, strict=True):
            with MemoryRasterSource(image, bundle.card.input) as source:
                at_points.append(predict_in_memory(predictor, source)[0].classes.ravel()[where])
        point_scores.append(
            Scores(confusion_matrix(np.concatenate(at_points), point_truth, len(names)), names)
        )
        status(f"{run.name}: the validation rasters")
        predictor.keep_probabilities = True
        total, kept = None, []
        for (image, _), truth in zip(config.validation, validation_truths, strict=True):
            with RasterSource(image, bundle.card.input) as source:
                maps, _ = predict_in_memory(predictor, source)
            scores = score(maps.classes, truth, names)
            total = scores if total is None else total + scores
            kept.append(np.where(maps.classes == CLASS_NODATA, np.nan, maps.probabilities).astype(np.float16))
        validation_scores.append(total)
        probabilities.append(kept)
    return names, point_scores, validation_scores, probabilities


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    if args.size < 1 or args.size > len(args.runs):
        raise UserError(f"--size must lie between 1 and the number of runs ({len(args.runs)})")
    records = _same_labels(args.runs)
    device = resolve_device(args.device)
    config = TrainingConfig.load(args.config)
    header(f"{NAME}: {SUMMARY}", describe_machine(device), {"runs": " ".join(map(str, args.runs))})
    truths = [read_labels(labels, config.class_map) for _, labels in config.train]
    points = held_out_points(truths, args.points, args.seed)
    point_truth = np.concatenate([t.ravel()[p] for t, p in zip(truths, points, strict=True)])
    validation_truths = [read_labels(labels, config.class_map) for _, labels in config.validation]

    names, point_scores, validation_scores, probabilities = _score_networks(
        args, records, config, device, points, point_truth, validation_truths
    )

    def ensemble(members: tuple[int, ...]) -> float:
        total = None
        for tile, truth in enumerate(validation_truths):
            mean = np.mean([probabilities[m][tile].astype(np.float32) for m in members], axis=0)
            classes = np.where(np.isnan(mean[0]), CLASS_NODATA, np.nan_to_num(mean).argmax(axis=0)).astype(
                np.uint8
            )
            scores = score(classes, truth, names)
            total = scores if total is None else total + scores
        return total.miou

    say("| run | seed | held-out points: mIoU | validation: mIoU |")
    for run, record, points_score, validated in zip(
        args.runs, records, point_scores, validation_scores, strict=True
    ):
        say(f"| {run.name} | {record['training']['seed']} | {points_score.miou:.2f} | {validated.miou:.2f} |")
    sessions = []
    for members in itertools.combinations(range(len(args.runs)), args.size):
        picked = max(members, key=lambda m: point_scores[m].miou)
        sessions.append(
            {
                "members": [args.runs[m].name for m in members],
                "mean": float(np.mean([validation_scores[m].miou for m in members])),
                "picked": validation_scores[picked].miou,
                "ensemble": ensemble(members),
            }
        )
    reference = records[0].get("reference_miou")
    say(f"over {len(sessions)} session(s) of {args.size} networks (dense reference: {reference}):")
    say("| way | mean mIoU | lowest | highest | mean share of dense |")
    summary = {}
    for way in ("mean", "picked", "ensemble"):
        values = np.array([s[way] for s in sessions])
        summary[way] = {"mean": round(float(values.mean()), 2), "min": round(float(values.min()), 2)}
        summary[way]["max"] = round(float(values.max()), 2)
        share = f"{100 * values.mean() / reference:.1f} %" if reference else "n/a"
        say(f"| {way} | {values.mean():.2f} | {values.min():.2f} | {values.max():.2f} | {share} |")
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "networks": [
            {"run": str(r), "points_miou": round(p.miou, 2), "validation_miou": round(v.miou, 2)}
            for r, p, v in zip(args.runs, point_scores, validation_scores, strict=True)
        ],
        "sessions": sessions,
        "summary": summary,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
    }
    save(NAME, data)
    return data
