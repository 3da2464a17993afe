"""pipeline: the whole ``run_predict`` job against the pure model forward of the same tiles.

The target (docs/architecture.md): predict's wall time ≤ 1.2 × the model-forward time of the same tiles,
measured in the same run. The forward pass runs over exactly the pipeline's tiles (same grid,
batches, device, channels_last), read and normalised into memory beforehand, so the ratio shows
what reading, blending, writing and ranking add on top of the network.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from backend.errors import UserError
from backend.io.raster import RasterSource
from backend.io.tiling import Tile, TileGrid
from backend.model.bundle import load_bundle
from backend.model.network import PRECISIONS
from backend.predict.inference import Predictor
from backend.predict.job import PredictParameters, run_predict
from backend.predict.uncertainty import Acquisition, run_network
from backend.system.runtime import resolve_device, synchronize

from . import OUT
from .machine import describe_machine
from .models import choose_model
from .options import add_model_and_device, add_raster, add_tiling
from .report import against, busy_warning, fmt, header, ratio, save, say, started, status
from .scenes import Scene, crop_scene, given_raster
from .timing import Stopwatch, stopwatch

NAME = "pipeline"
SUMMARY = "whole predict vs the pure model forward of the same tiles (target ≤ 1.2×)"
TARGET = 1.2
RUN_DIR = OUT / "pipeline-run"

Batch = tuple[list[Tile], torch.Tensor]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_raster(parser, 6000)
    add_model_and_device(parser)
    add_tiling(parser)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="pipeline/forward pairs, alternating; the fastest of each counts (default: 2)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="as predict's (default: auto)"
    )


def preload(predictor: Predictor, source: RasterSource, grid: TileGrid) -> list[Batch]:
    """The pipeline's batches (per tile row, ``batch_size`` at a time) as device tensors."""
    batches = []
    for row in grid.rows():
        for i in range(0, len(row), predictor.batch_size):
            tiles = row[i : i + predictor.batch_size]
            inputs, _ = predictor.read_batch(source, tiles, [])
            batches.append((tiles, torch.from_numpy(inputs).permute(0, 3, 1, 2).to(predictor.device)))
    return batches


def forward(predictor: Predictor, batches: list[Batch]) -> Stopwatch:
    """The network (with its softmax) over ``batches``, nothing else."""
    with stopwatch() as watch:
        for tiles, x in batches:
            run_network(
                predictor.network,
                x,
                predictor.acquisition,
                [t.index for t in tiles],
                predictor.card.n_bands,
                None,
                predictor.autocast,
            )
        synchronize(predictor.device)
    return watch


def pipeline(
    scene: Scene, model_dir: Path, args: argparse.Namespace, device: torch.device
) -> tuple[Stopwatch, dict]:
    """The whole job as the CLI runs it: load the model, read, predict, write, rank."""
    params = PredictParameters(
        raster=scene.path,
        out_dir=RUN_DIR,
        model_dir=model_dir,
        device=str(device),
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        precision=args.precision,
    )
    with stopwatch() as watch:
        report = run_predict(params)
    return watch, report.run


def _alternate(
    scene, model, args, device, predictor, batches
) -> tuple[list[Stopwatch], list[Stopwatch], list[dict]]:
    """``args.repeats`` pairs of a whole run_predict job then the pure forward, printed as they go."""
    forwards: list[Stopwatch] = []
    pipelines: list[Stopwatch] = []
    runs: list[dict] = []
    columns = (
        ("pair", 4),
        ("pipeline s", 10),
        ("cpu/wall", 8),
        ("others", 6),
        ("forward s", 10),
        ("cpu/wall", 8),
    )
    say("  ".join(f"{title:>{width}}" for title, width in columns) + "  others")
    for pair in range(1, args.repeats + 1):
        status(f"pair {pair}/{args.repeats}: run_predict")
        watch, run_json = pipeline(scene, model.directory, args, device)
        pipelines.append(watch)
        runs.append(run_json)
        status(f"pair {pair}/{args.repeats}: forward")
        forwards.append(forward(predictor, batches))
        p, f = pipelines[-1], forwards[-1]
        say(
            f"{pair:>4}  {p.wall:>10.2f}  {p.utilisation:>8.2f}  {fmt(p.others()):>6}  "
            f"{f.wall:>10.2f}  {f.utilisation:>8.2f}  {fmt(f.others())}"
        )
    return pipelines, forwards, runs


def _record(begun, machine, model, scene, info, predictor, order, forwards, pipelines, runs, prepare) -> dict:
    """What benchmarks/out/pipeline.json keeps of the run."""
    quickest = min(range(len(forwards)), key=lambda i: forwards[i].wall)
    best = min(range(len(pipelines)), key=lambda i: pipelines[i].wall)
    fastest_forward, fastest_pipeline = forwards[quickest].wall, pipelines[best].wall
    stages, tiles = runs[best]["seconds"], runs[best]["tile_count"]
    overall, predict_stage = ratio(fastest_pipeline, fastest_forward), stages.get("predict")
    return {
        "benchmark": NAME,
        "started": begun,
        "machine": machine,
        "model": model.description,
        "raster": {
            "path": str(scene.path),
            "description": scene.description,
            "size": [info.width, info.height],
        },
        "tiles": tiles,
        "tile_size": predictor.tile,
        "overlap": predictor.overlap,
        "batch_size": predictor.batch_size,
        "order": order,
        "forward": [w.as_json() for w in forwards],
        "pipeline": [w.as_json() for w in pipelines],
        "pipeline_stages_seconds": stages,
        "input_preparation_seconds": prepare.wall,
        "best": {
            "forward_s": fastest_forward,
            "pipeline_s": fastest_pipeline,
            "forward_s_per_tile": fastest_forward / tiles,
            "pipeline_s_per_tile": fastest_pipeline / tiles,
        },
        "ratios": {
            "pipeline_over_forward": overall,
            "predict_stage_over_forward": ratio(predict_stage, fastest_forward),
        },
        "targets": {"pipeline_over_forward": TARGET},
        "pipeline_run": runs[best],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    if args.repeats < 1:
        raise UserError(f"--repeats must be at least 1, not {args.repeats}")
    device = resolve_device(args.device)
    model = choose_model(args.model)
    scene = given_raster(args.raster) if args.raster else crop_scene(args.size)
    bundle = load_bundle(model.directory)
    predictor = Predictor(
        bundle,
        device,
        Acquisition("entropy", mc_rate=bundle.card.mc_dropout_rate),
        args.tile,
        args.overlap,
        args.batch_size,
        owns_network=True,  # as run_predict's own predictor: BatchNorm folded
        precision=args.precision,
    )
    status(f"reading and normalising every tile of {scene.path.name} into memory")
    with stopwatch() as prepare, RasterSource(scene.path, bundle.card.input) as source:
        info = source.info
        grid = TileGrid(info.width, info.height, predictor.tile, predictor.overlap)
        batches = preload(predictor, source, grid)
    order = (
        f"one warm-up forward of the first batch, then pipeline and forward alternating "
        f"{args.repeats} time(s), pipeline first; the fastest of each counts"
    )
    machine = describe_machine(device)
    header(
        "pipeline: whole predict vs pure model forward (entropy)",
        machine,
        {
            "model": model.description,
            "raster": f"{scene.description} ({info.width} × {info.height})",
            "tiles": f"{len(grid)} ({predictor.tile} px, overlap {predictor.overlap}, "
            f"batch {predictor.batch_size}, {len(batches)} batches)",
            "precision": predictor.precision,
            "order": order,
            "cpu/wall": "this process's CPU seconds per wall second (≈ threads used)",
            "others": "cores used meanwhile by the rest of the machine (> 0.25: figures suspect)",
        },
    )
    forward(predictor, batches[:1])
    pipelines, forwards, runs = _alternate(scene, model, args, device, predictor, batches)
    quickest = min(range(len(forwards)), key=lambda i: forwards[i].wall)
    fastest_forward = forwards[quickest].wall
    best = min(range(len(pipelines)), key=lambda i: pipelines[i].wall)
    fastest_pipeline = pipelines[best].wall
    stages = runs[best]["seconds"]
    predict_stage = stages.get("predict")
    tiles = len(grid)
    overall = ratio(fastest_pipeline, fastest_forward)
    say(
        f"forward (network only, tiles preloaded): {fastest_forward:.2f} s = "
        f"{fastest_forward / tiles:.3f} s/tile"
    )
    say(
        f"pipeline (run_predict, the whole job):   {fastest_pipeline:.2f} s = "
        f"{fastest_pipeline / tiles:.3f} s/tile"
    )
    say("  stages: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    say(f"(reading + normalising the tiles alone, one thread, untimed above: {prepare.wall:.2f} s)")
    say(f"ratio pipeline/forward = {fmt(overall)} (target ≤ {TARGET}: {against(overall, TARGET)})")
    say(f"ratio predict stage/forward = {fmt(ratio(predict_stage, fastest_forward))}")
    busy_warning([forwards[quickest].others(), pipelines[best].others()], device.type)
    data = _record(begun, machine, model, scene, info, predictor, order, forwards, pipelines, runs, prepare)
    save(NAME, data)
    return data
