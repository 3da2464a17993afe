"""prior: what each estimate of the imagery's class shares does to a SIAL run's network.

A ``benchmark --protocol sial --adjust-prior`` run leaves its network corrected for its labels'
class shares (backend/prior_shift.py). This takes the correction out again and scores the
validation rasters with the network corrected four ways: not at all; to the posteriors' plain
mean over the training imagery (what ``--adjust-prior`` does); to EM's estimate (Saerens et
al., 2002); and, for reference only, to the true shares of the training labels (an oracle no
session has). With calibrated posteriors EM lands near the true shares and the oracle
correction helps most; where even the oracle lowers the mIoU, the network's posteriors are not
calibrated and only a partial correction (the mean) is safe.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import UserError
from backend.io.raster import MemoryRasterSource, RasterSource
from backend.learn.prior_shift import MAX_WINDOWS, PriorShift, sample_posteriors
from backend.learn.sparse_training import window_probabilities
from backend.learn.training_config import TrainingConfig
from backend.model.bundle import load_bundle
from backend.predict.evaluation import Scores, predict_in_memory, read_labels, score
from backend.predict.inference import Predictor
from backend.system.runtime import resolve_device
from benchmarks.machine import describe_machine
from benchmarks.report import header, save, say, started, status

NAME = "prior"
SUMMARY = "a SIAL run's network with no, mean-posterior, EM and true-share prior corrections"
REPOSITORY = Path(__file__).resolve().parent.parent


def estimate_shares(
    posteriors: np.ndarray, trained_shares: np.ndarray, iterations: int = 500, tolerance: float = 1e-7
) -> np.ndarray:
    """The class shares of the pixels behind ``posteriors`` (N × classes, from a network trained
    at ``trained_shares``), by EM: reweight every posterior by (estimate / trained share),
    renormalise, and take the mean as the next estimate, until it stops moving."""
    if posteriors.ndim != 2 or posteriors.shape[1] != len(trained_shares) or not len(posteriors):
        raise UserError("prior estimation needs an N × classes array of posteriors, N > 0")
    posteriors = posteriors.astype(np.float64)
    trained = np.asarray(trained_shares, dtype=np.float64)
    estimate = trained.copy()
    for _ in range(iterations):
        weighted = posteriors * (estimate / trained)
        weighted /= np.maximum(weighted.sum(axis=1, keepdims=True), 1e-12)
        updated = weighted.mean(axis=0)
        converged = np.abs(updated - estimate).max() < tolerance
        estimate = updated
        if converged:
            break
    return estimate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="output folder of a SIAL run made with --adjust-prior")
    parser.add_argument("--config", type=Path, default=REPOSITORY / "configs" / "dubai-landcover.json")
    parser.add_argument(
        "--windows", type=int, default=MAX_WINDOWS, help="most tile-sized windows read for the estimates"
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the windows drawn where there are more (default: the run's)"
    )
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    result = json.loads((args.run / "sial.json").read_text())
    record = result["iterations"][-1]["prior_shift"]
    seed = result["training"]["seed"] if args.seed is None else args.seed  # the run's own windows
    bundle = load_bundle(args.run / "model")
    PriorShift.from_json(record).remove(bundle.network)
    network, card = bundle.network.to(device).eval(), bundle.card
    config = TrainingConfig.load(args.config)
    header(f"{NAME}: {SUMMARY}", describe_machine(device), {"run": str(args.run)})

    status("sampling the network's posteriors over the training rasters")
    sources = [MemoryRasterSource(image, card.input) for image, _ in config.train]
    probabilities = [window_probabilities(network, card, s, device) for s in sources]
    posteriors = sample_posteriors(probabilities, sources, args.windows, card.tiling.tile_size, seed)
    trained = np.asarray(record["label_shares"])
    shares = {
        "none": trained,
        "mean posterior (what --adjust-prior uses)": posteriors.mean(axis=0),
        "em": estimate_shares(posteriors, trained),
        "true shares (oracle)": np.asarray(record["true_shares"]),
    }

    status("predicting the validation rasters")
    predictor = Predictor(copy.deepcopy(bundle), device)
    predictor.keep_probabilities = True
    validation = []
    for image, labels in config.validation:
        with RasterSource(image, card.input) as source:
            maps, _ = predict_in_memory(predictor, source)
        log_p = np.log(np.clip(maps.probabilities, 1e-8, 1.0))
        validation.append((log_p, read_labels(labels, config.class_map)))

    names = [c.name for c in card.classes]
    results = {}
    say(
        "| correction | shares ("
        + ", ".join(names)
        + ") | mIoU | IoU "
        + " / ".join(names)
        + " | recall (same order) |"
    )
    for name, target in shares.items():
        total: Scores | None = None
        adjustment = np.log(target / trained)[:, None, None]
        for log_p, truth in validation:
            scores = score(np.argmax(log_p + adjustment, axis=0).astype(np.uint8), truth, names)
            total = scores if total is None else total + scores
        per_class = total.per_class()
        recall = 100.0 * np.diag(total.confusion) / np.maximum(total.confusion.sum(axis=1), 1)
        results[name] = {"shares": target.round(4).tolist(), "miou": round(total.miou, 2)}
        results[name] |= {"per_class": per_class, "recall": recall.round(2).tolist()}
        say(
            f"| {name} | {', '.join(f'{s:.3f}' for s in target)} | {total.miou:.2f} | "
            + " / ".join(f"{per_class[n]:.1f}" for n in names)
            + " | "
            + " / ".join(f"{r:.1f}" for r in recall)
            + " |"
        )
    for source in sources:
        source.close()
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "results": results,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
    }
    save(NAME, data)
    return data
