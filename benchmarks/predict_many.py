"""predict_many: a raster split into blocks on a local Dask cluster, against one ``predict``.

Measured in one run, on the same raster:
- single-process ``predict`` as the CLI runs it (all cores for torch), and with one torch thread;
- ``predict-many`` on a local cluster of 1, then 2 worker processes with one torch thread each,
  the model already loaded in every worker (a warm-up loads it: a long run pays that once per
  worker): blocks per second, and the tiles each block computes (its halo included);
- the scheduler's overhead per task: no-op tasks on the same cluster, in a batch and one at a time;
- the projected time of a 100 000² raster on N workers, from the measured cost per tile.

The projection assumes: every worker sustains the lowest per-tile cost measured here (whole
task: reading, network, blending, writing, COG layout; the cluster size where each worker had its
cores to itself, as a worker on its own machine or GPU has); the workers scale perfectly (the
shared file system keeps up; with 625 blocks the tail is small); the scheduler's per-task overhead
is the higher of the measured batch figures; cluster start-up and the model's first load are left
out. Run it with ``--device cuda`` on a GPU machine for a GPU worker's per-tile cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from backend.cluster.connection import Cluster
from backend.cluster.inputs import output_names
from backend.cluster.job import plan_job, run_predict_many
from backend.cluster.parameters import ManyParameters
from backend.cluster.planning import block_windows, tiles_reaching
from backend.io.tiling import tile_offsets
from backend.predict.job import PredictParameters, run_predict
from backend.system.runtime import resolve_device

from . import OUT
from .machine import describe_machine
from .models import choose_model
from .options import add_model_and_device, add_raster
from .report import busy_warning, fmt, header, save, say, started, status
from .scenes import crop_scene, given_raster
from .timing import stopwatch

NAME = "predict_many"
SUMMARY = "predict-many: blocks/s on 1 and 2 local Dask workers vs one predict; projection for 100 000²"
RUN_DIR = OUT / "predict-many-runs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_raster(parser, 4096)
    add_model_and_device(parser)
    parser.add_argument("--block", type=int, default=2048, help="block side (default: 2048, four blocks)")
    parser.add_argument("--workers", default="1,2", help="cluster sizes to measure (default: 1,2)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per cluster size, fastest counts (default: 2)"
    )
    parser.add_argument(
        "--noop-tasks", type=int, default=500, help="no-op tasks for the overhead (default: 500)"
    )
    parser.add_argument(
        "--project-size", type=int, default=100_000, help="projected raster side (default: 100000)"
    )
    parser.add_argument(
        "--project-block", type=int, default=4096, help="projected block side (default: 4096)"
    )
    parser.add_argument(
        "--project-workers", default="1,8,64", help="projected cluster sizes (default: 1,8,64)"
    )


def noop(value: int) -> int:
    return value


def cpu_seconds() -> float:
    """On a worker: the CPU time its process has used (to tell its load from the rest's)."""
    times = os.times()
    return times.user + times.system


def warm(settings: Any) -> bool:
    """On a worker: load the model into its cache and run it once, as a long run's first task does."""
    from backend.cluster.worker import predictor_for

    predictor, loaded = predictor_for(settings)
    x = torch.zeros(1, predictor.card.in_channels, predictor.tile, predictor.tile, device=predictor.device)
    with torch.inference_mode():
        predictor.network(x.to(memory_format=torch.channels_last))
    return loaded


@contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_predict(scene: Path, model: Path, device: str, threads: int) -> dict[str, Any]:
    out = RUN_DIR / f"predict-{threads}-threads"
    with torch_threads(threads), stopwatch() as watch:
        run = run_predict(PredictParameters(raster=scene, out_dir=out, model_dir=model, device=device)).run
    others = watch.others()
    return {
        "threads": threads,
        "wall_s": watch.wall,
        "tiles": run["tile_count"],
        "other_cores": others,
        "run": run,
    }


def scheduler_overhead(client: Any, tasks: int) -> dict[str, float]:
    """Seconds per no-op task: submitted together (throughput) and one after another (latency)."""
    start = time.perf_counter()
    client.gather(client.map(noop, range(tasks), pure=False))
    batch = (time.perf_counter() - start) / tasks
    start = time.perf_counter()
    for i in range(50):
        client.submit(noop, i, pure=False).result()
    return {"batch_s_per_task": batch, "round_trip_s": (time.perf_counter() - start) / 50}


def cluster_run(params: ManyParameters, workers: int, noop_tasks: int, repeats: int) -> dict[str, Any]:
    """A local cluster of ``workers``, warmed up, then ``repeats`` predict-many runs on it (the
    fastest counts), then the no-op tasks."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        settings = plan_job(params).settings(Cluster(client, "benchmark", True))
        client.run(warm, settings)
        params.scheduler = cluster.scheduler_address
        attempts = []
        for _ in range(repeats):
            shutil.rmtree(params.out_dir, ignore_errors=True)  # this benchmark's own folder
            before = sum(client.run(cpu_seconds).values())
            with stopwatch() as watch:
                run = run_predict_many(params).run
            workers_cpu = sum(client.run(cpu_seconds).values()) - before
            attempts.append((run["seconds"]["compute"], watch, run, watch.others(watch.cpu + workers_cpu)))
        overhead = scheduler_overhead(client, noop_tasks)
    _, watch, run, others = min(attempts, key=lambda a: a[0])
    tasks = [t for t in run["tasks"] if t["status"] == "computed"]
    compute = run["seconds"]["compute"]
    busy = sum(t["seconds"] for t in tasks)
    return {
        "workers": workers,
        "wall_s": watch.wall,
        "compute_s": compute,
        "blocks": len(tasks),
        "blocks_per_s": len(tasks) / compute,
        "tiles": sum(t["tiles"] for t in tasks),
        "task_s": busy,
        "s_per_tile": busy / sum(t["tiles"] for t in tasks),
        "idle_s_per_task": (workers * compute - busy) / len(tasks),
        "machine_cores_used": (watch.machine or 0.0) / watch.wall,
        "compute_s_all_repeats": [a[0] for a in attempts],
        "other_cores": others,
        "noop": overhead,
        "tasks": tasks,
    }


def projection(card_tile: int, overlap: int, size: int, block: int) -> dict[str, int]:
    """Blocks and tiles of a size² raster, counted from the grid's offsets alone."""
    offsets = tile_offsets(size, card_tile, overlap)
    tiles = 0
    windows = block_windows(size, size, block)
    for _, (row0, col0, row1, col1) in windows:
        tiles += tiles_reaching(offsets, card_tile, row0, row1) * tiles_reaching(
            offsets, card_tile, col0, col1
        )
    return {"blocks": len(windows), "tiles": tiles, "grid_tiles": len(offsets) ** 2}


def project(args: argparse.Namespace, predicts: list, runs: list, device_type: str) -> dict[str, Any]:
    """The projected hours of an ``--project-size``² raster on each ``--project-workers`` count."""
    card_tile, overlap = predicts[0]["run"]["tile_size"], predicts[0]["run"]["overlap"]
    projected = projection(card_tile, overlap, args.project_size, args.project_block)
    cost = min(r["s_per_tile"] for r in runs)  # a worker with its cores to itself, as on a cluster
    per_task = max(r["noop"]["batch_s_per_task"] for r in runs)
    hours = {
        n: (projected["tiles"] * cost + projected["blocks"] * per_task) / n / 3600
        for n in (int(v) for v in args.project_workers.split(","))
    }
    say(
        f"projection {args.project_size}²: {projected['blocks']} blocks of {args.project_block}, "
        f"{projected['tiles']} tiles ({projected['grid_tiles']} in the grid) × {cost:.3f} s "
        f"on {device_type} = " + ", ".join(f"{fmt(h)} h on {n} worker(s)" for n, h in hours.items())
    )
    return {**projected, "size": args.project_size, "block": args.project_block, "s_per_tile": cost,
            "s_per_task": per_task, "hours": hours}  # fmt: skip


def agreement(many_out: Path, name: str, reference: Path) -> dict[str, Any]:
    """How a predict-many output compares with the one-thread ``predict`` of the same raster."""
    import numpy as np
    import rasterio

    folder = many_out / name
    split = (folder / "classes.vrt").is_file()
    maps = {}
    for kind in ("classes", "uncertainty"):
        with (
            rasterio.open(folder / f"{kind}.{'vrt' if split else 'tif'}") as a,
            rasterio.open(reference / f"{kind}.tif") as b,
        ):
            maps[kind] = (a.read(1), b.read(1))
    (ca, cb), (ua, ub) = maps["classes"], maps["uncertainty"]
    return {
        "classes_differing": int((ca != cb).sum()),
        "uncertainty_max_abs_diff": float(np.nanmax(np.abs(ua.astype(np.float64) - ub))),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    device = resolve_device(args.device)
    model = choose_model(args.model)
    scene = given_raster(args.raster) if args.raster else crop_scene(args.size)
    machine = describe_machine(device)
    sizes = [int(n) for n in args.workers.split(",")]
    header(
        "predict_many: blocks on a local Dask cluster vs one predict (entropy)",
        machine,
        {"model": model.description, "raster": scene.description, "block": f"{args.block} px"},
    )
    predicts = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        status(f"single-process predict, {threads} torch thread(s)")
        predicts.append(single_predict(scene.path, model.directory, str(device), threads))
        p = predicts[-1]
        say(
            f"predict, {threads} torch thread(s): {p['wall_s']:.2f} s for {p['tiles']} tiles; "
            f"others used {fmt(p['other_cores'])} cores"
        )
    runs = []
    for workers in sizes:
        status(f"predict-many on {workers} local worker(s), one torch thread each")
        params = ManyParameters(
            inputs=[scene.path], out_dir=RUN_DIR / f"many-{workers}", model_dir=model.directory,
            device=str(device), block=args.block, torch_threads=1,
        )  # fmt: skip
        runs.append(cluster_run(params, workers, args.noop_tasks, args.repeats))
        r = runs[-1]
        one_thread = next(p for p in predicts if p["threads"] == 1)
        r["vs_predict"] = agreement(params.out_dir, output_names([scene.path.resolve()])[0],
                                    RUN_DIR / "predict-1-threads")  # fmt: skip
        r["speedup_vs_predict"] = {f"{p['threads']}_threads": p["wall_s"] / r["compute_s"] for p in predicts}
        say(
            f"{workers} worker(s): {r['blocks']} blocks, {r['tiles']} tiles in {r['compute_s']:.2f} s = "
            f"{r['blocks_per_s']:.3f} blocks/s; {r['s_per_tile']:.3f} s per tile in the tasks; "
            f"idle {r['idle_s_per_task']:.2f} s per task; no-op task "
            f"{1000 * r['noop']['batch_s_per_task']:.2f} ms (batch), "
            f"{1000 * r['noop']['round_trip_s']:.2f} ms (round trip); "
            f"others used {fmt(r['other_cores'])} cores"
        )
        say(
            f"  vs one-thread predict: {r['vs_predict']['classes_differing']} class pixels differ, "
            f"uncertainty within {r['vs_predict']['uncertainty_max_abs_diff']:.1e}; "
            f"{fmt(one_thread['wall_s'] / r['compute_s'])}× its speed"
        )
    projected = project(args, predicts, runs, device.type)
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": machine,
        "model": model.description,
        "raster": str(scene.path),
        "block": args.block,
        "predict": predicts,
        "clusters": runs,
        "projection": projected,
    }
    busy_warning([p["other_cores"] for p in predicts] + [r["other_cores"] for r in runs], device.type)
    save(NAME, data)
    return data
