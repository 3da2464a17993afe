"""queries: adaptive-region queries against patch queries, at equal annotation cost.

Both start from the bundled 5-class model on a Dubai validation tile, and both pay one answer
per query:
- a patch query: DIAL's annotator clicks the largest error of the most uncertain unvisited
  patch, and labels 1 pixel;
- a region query: the annotator names the dominant class of the most uncertain model-merged
  region (backend/adaptive_regions.py), and labels every pixel of it.

After every batch of queries the model is fine-tuned the same way on all labels so far (sparse
cross-entropy, a few AdamW steps, BatchNorm frozen and DISCA's λ·L1 to the starting model's
prediction), and the tile's mIoU is measured.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.io.raster import RasterSource
from backend.learn.sparse_training import SparseSettings, SparseTrainer
from backend.learn.superpixels import SparseLabels
from backend.model.bundle import ModelBundle, load_bundle
from backend.predict.evaluation import predict_in_memory, read_labels, score
from backend.predict.inference import Predictor
from backend.protocols.agents import dial_click
from backend.system.runtime import resolve_device
from benchmarks.machine import describe_machine
from benchmarks.report import header, save, say, started
from benchmarks.scenes import SHARED_DATA
from experiments.adaptive_regions import (
    RegionSettings,
    answer_region,
    merge_regions,
    rank_regions,
    superpixels,
)

NAME = "queries"
SUMMARY = "adaptive-region queries vs patch queries at equal annotation cost (Dubai tiles)"
REPOSITORY = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=REPOSITORY / "models" / "dubai-landcover")
    parser.add_argument("--tiles", default="2,6")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10, help="queries between two fine-tunings")
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps after each batch")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--anchor-weight", type=float, default=3.0, help="λ of the L1 to the starting model (DISCA's default)"
    )
    parser.add_argument("--device", default="auto")


def merged(labels: list[SparseLabels]) -> SparseLabels:
    return SparseLabels(
        *(np.concatenate([getattr(lbl, f) for lbl in labels]) for f in ("rows", "cols", "classes", "clicked"))
    )


def run_strategy(
    strategy: str, model: Path, image: Path, truth: np.ndarray, args, device
) -> list[dict[str, Any]]:
    base = load_bundle(model)
    bundle = ModelBundle(base.card, copy.deepcopy(base.network))
    names = [c.name for c in bundle.card.classes]
    settings = SparseSettings(
        steps=args.steps,
        loss="ce",
        learning_rate=args.learning_rate,
        crop=128,
        batch=8,
        freeze_batchnorm=True,
        anchor_weight=args.anchor_weight,
    )
    trainer = SparseTrainer(bundle.network, bundle.card, device, settings)
    region_settings = RegionSettings()
    labels: list[SparseLabels] = []
    asked: set[int] = set()
    curve = []
    with RasterSource(image, bundle.card.input) as source:
        segments = superpixels(source, region_settings) if strategy == "regions" else None
        for done in range(0, args.queries + 1, args.batch):
            predictor = Predictor(bundle, device)
            predictor.keep_probabilities = strategy == "regions"
            maps, scores = predict_in_memory(predictor, source, patch_size=256)
            current = score(maps.classes, truth, names)
            labelled = int(sum(len(lbl) for lbl in labels))
            curve.append({"queries": done, "miou": round(current.miou, 2), "labelled_pixels": labelled})
            say(
                f"  {strategy:>7}: {done:3d} queries, {labelled:7d} labelled pixels → mIoU {current.miou:.2f}"
            )
            if done == args.queries:
                break
            if strategy == "regions":
                regions = merge_regions(segments, maps.probabilities, region_settings)
                for region in rank_regions(regions, maps.uncertainty, asked)[: args.batch]:
                    asked.add(region)
                    answer = answer_region(regions, region, truth)
                    if answer is not None:
                        labels.append(answer)
            else:
                ranked = sorted(
                    (p for p in scores.patches if scores.count[p.index] and p.index not in asked),
                    key=lambda p: -scores.score(p.index),
                )
                for patch in ranked[: args.batch]:
                    asked.add(patch.index)
                    click = dial_click(maps.classes, truth, patch)
                    if click is not None:
                        labels.append(SparseLabels.from_clicks([click]))
            if labels:
                trainer.fit([(source, merged(labels))])
    return curve


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    header(
        f"{NAME}: {SUMMARY}",
        describe_machine(device),
        {"model": str(args.model), "queries": str(args.queries)},
    )
    results = {}
    for n in (int(t) for t in args.tiles.split(",")):
        image = SHARED_DATA / "dubai" / f"tile_{n}_image.tif"
        truth = read_labels(SHARED_DATA / "dubai" / f"tile_{n}_labels.tif")
        say(f"tile {n}")
        for strategy in ("patches", "regions"):
            results[f"tile{n}-{strategy}"] = run_strategy(strategy, args.model, image, truth, args, device)
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": describe_machine(device),
        "results": results,
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
    }
    save(NAME, {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()})
    return data
