"""acquisition: what each acquisition function costs, relative to entropy.

The targets (docs/architecture.md): MC dropout (5 passes) ≤ 5 × and ODIN ≤ 3 × the cost of entropy. The
cost compared is the ``predict`` stage of run.json (tiles → network → blended maps), measured by
``run_predict`` in this process; loading the model and writing overviews and patches are the same
for every function, so they would only blur the ratio (the whole run's wall time is shown too).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from backend.io.raster import RasterSource
from backend.io.tiling import TileGrid
from backend.model.bundle import load_bundle
from backend.predict.inference import Predictor
from backend.predict.job import PredictParameters, run_predict
from backend.predict.uncertainty import ACQUISITIONS, Acquisition
from backend.system.runtime import resolve_device, synchronize

from . import OUT
from .machine import describe_machine
from .models import choose_model
from .options import add_model_and_device, add_raster, add_tiling
from .report import against, busy_warning, fmt, header, ratio, save, say, started, status
from .scenes import crop_scene, given_raster
from .timing import stopwatch

NAME = "acquisition"
SUMMARY = "cost of entropy, margin, mcdropout and odin relative to entropy (targets 5×, 3×)"
TARGETS = {"mcdropout": 5.0, "odin": 3.0}
"""× entropy; MC dropout's is for 5 passes."""
RUN_DIR = OUT / "acquisition-run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_raster(parser, 2048)
    add_model_and_device(parser)
    add_tiling(parser)
    parser.add_argument("--mc-passes", type=int, default=5, help="MC dropout passes (default: 5)")


def warm_up(model_dir: Path, raster: Path, device: torch.device, args: argparse.Namespace) -> None:
    """One batch through each function's own code path (dropout decoder, ODIN's gradient)."""
    bundle = load_bundle(model_dir)
    with RasterSource(raster, bundle.card.input) as source:
        for name in ACQUISITIONS:
            acquisition = Acquisition(name, mc_passes=args.mc_passes, mc_rate=bundle.card.mc_dropout_rate)
            predictor = Predictor(bundle, device, acquisition, args.tile, args.overlap, args.batch_size)
            grid = TileGrid(source.info.width, source.info.height, predictor.tile, predictor.overlap)
            tiles = grid.tiles[: predictor.batch_size]
            inputs, _ = predictor.read_batch(source, tiles, [])
            predictor.forward(inputs, tiles, source)
    synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    model = choose_model(args.model)
    scene = given_raster(args.raster) if args.raster else crop_scene(args.size)
    machine = describe_machine(device)
    header(
        "acquisition: cost of each acquisition function relative to entropy",
        machine,
        {
            "model": model.description,
            "raster": scene.description,
            "measure": "the 'predict' stage seconds of run.json, run_predict in this process, "
            "each function once after a one-batch warm-up of every function",
            "cpu/wall": "this process's CPU seconds per wall second (≈ threads used)",
            "others": "cores used meanwhile by the rest of the machine (> 0.25: figures suspect)",
        },
    )
    status("warming up every acquisition function on one batch")
    warm_up(model.directory, scene.path, device, args)
    results: dict[str, dict[str, Any]] = {}
    for name in ACQUISITIONS:
        status(f"run_predict with {name}")
        params = PredictParameters(
            raster=scene.path,
            out_dir=RUN_DIR / name,
            model_dir=model.directory,
            acquisition=name,
            mc_passes=args.mc_passes,
            device=str(device),
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
        )
        with stopwatch() as watch:
            run_json = run_predict(params).run
        results[name] = {
            "predict_s": run_json["seconds"]["predict"],
            "wall_s": watch.wall,
            "cpu_s": watch.cpu,
            "other_cores": watch.others(),
            "run": run_json,
        }
    entropy = results["entropy"]
    tiles = entropy["run"]["tile_count"]
    say(f"tiles: {tiles} ({entropy['run']['tile_size']} px, batch {entropy['run']['batch_size']})")
    say(
        f"{'function':<13}  {'predict s':>9}  {'× entropy':>9}  {'wall s':>7}  {'× entropy':>9}  "
        f"{'cpu/wall':>8}  {'others':>6}  target"
    )
    for name, result in results.items():
        result["ratio"] = ratio(result["predict_s"], entropy["predict_s"])
        result["wall_ratio"] = ratio(result["wall_s"], entropy["wall_s"])
        limit = TARGETS.get(name) if name != "mcdropout" or args.mc_passes == 5 else None
        target = f"≤ {limit:g}×: {against(result['ratio'], limit)}" if limit else ""
        label = f"{name} ({args.mc_passes})" if name == "mcdropout" else name
        say(
            f"{label:<13}  {result['predict_s']:>9.2f}  {fmt(result['ratio']):>9}  "
            f"{result['wall_s']:>7.2f}  {fmt(result['wall_ratio']):>9}  "
            f"{result['cpu_s'] / result['wall_s']:>8.2f}  {fmt(result['other_cores']):>6}  {target}"
        )
    busy_warning([r["other_cores"] for r in results.values()], device.type)
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": machine,
        "model": model.description,
        "raster": {"path": str(scene.path), "description": scene.description},
        "measure": "predict stage seconds from run.json (run_predict in-process); wall_s for context",
        "mc_passes": args.mc_passes,
        "tiles": tiles,
        "results": {
            name: {k: v for k, v in result.items() if k != "run"} | {"stages": result["run"]["seconds"]}
            for name, result in results.items()
        },
        "targets": TARGETS,
    }
    save(NAME, data)
    return data
