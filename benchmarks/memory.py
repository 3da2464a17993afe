"""memory: peak memory of ``python -m backend predict`` on 6000² and 12000² scenes.

The targets (docs/architecture.md): ≤ 1.5 GB on 6000 × 6000 and flat in raster size (12000² ≤ 1.2 × the
6000² peak). Each size runs the CLI in a fresh process, forked by a small launcher (see
launcher.py: a child of this large process would inherit its RSS high-water mark), so one run's
memory never counts towards another's. The peak is that process's ru_maxrss from wait4 (its
whole life, imports included), with run.json's own ``peak_memory_mib`` (VmHWM), the GPU peak on CUDA, and
its anonymous memory sampled from /proc (RSS without the pages of torch's libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.errors import UserError
from backend.system.runtime import resolve_device

from . import OUT, REPOSITORY
from .machine import describe_machine
from .models import choose_model
from .options import add_model_and_device
from .report import against, busy_warning, fmt, header, ratio, save, say, started, status
from .scenes import BASE_SIZE, square_scene
from .timing import stopwatch

NAME = "memory"
SUMMARY = "peak memory of the predict CLI on 6000² and 12000² scenes (≤ 1.5 GiB, ≤ 1.2× growth)"
TARGET_MIB = 1536.0
"""1.5 GB read as 1.5 GiB; ru_maxrss and run.json report MiB."""
TARGET_GROWTH = 1.2
RUN_DIR = OUT / "memory-run"
LAUNCHER = Path(__file__).with_name("launcher.py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default=f"{BASE_SIZE},{2 * BASE_SIZE}",
        help=f"comma-separated scene sides (default: {BASE_SIZE},{2 * BASE_SIZE})",
    )
    parser.add_argument(
        "--skip-build", action="store_true", help="use the cached scenes only (error if one is missing)"
    )
    parser.add_argument(
        "--gdal-cachemax",
        type=int,
        metavar="MB",
        help="set GDAL_CACHEMAX for the predict runs (default: unset, so the CLI's own cap applies)",
    )
    add_model_and_device(parser)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--sizes must be comma-separated integers, not '{text}'") from None
    if not sizes or sizes[0] < 1:
        raise UserError(f"--sizes needs positive sides, not '{text}'")
    return sizes


@dataclass
class ChildRun:
    status: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    peak_anon_mib: float | None  # sampled: the process's own pages, without shared-library ones
    vm_hwm_mib_sampled: float | None
    other_cores: float | None  # the rest of the machine meanwhile


def child_run(command: list[str], log: Path, env: dict[str, str] | None = None) -> ChildRun:
    """One fresh process, started by the small launcher so that its peak is its own.

    Its stdout goes to ``log``; its stderr (the CLI's progress) passes through.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    result = log.with_suffix(".rusage.json")
    result.unlink(missing_ok=True)
    with open(log, "wb") as out, stopwatch() as watch:
        subprocess.run(
            [sys.executable, str(LAUNCHER), str(result), *command], cwd=REPOSITORY, stdout=out, env=env
        )
    if not result.is_file():
        raise UserError(f"the measuring launcher failed for {' '.join(command)}; see {log}")
    figures = json.loads(result.read_text(encoding="utf-8"))
    return ChildRun(
        status=figures["status"],
        wall_s=figures["wall_s"],
        cpu_s=figures["cpu_s"],
        peak_rss_mib=figures["peak_rss_mib"],
        peak_anon_mib=figures["peak_anon_mib"],
        vm_hwm_mib_sampled=figures["vm_hwm_mib_sampled"],
        other_cores=watch.others(own_cpu=figures["cpu_s"] + watch.cpu),
    )


def baseline(model_dir: Path) -> ChildRun:
    """Peak of a child that only imports the engine and loads the model: the floor under any run."""
    code = f"import backend.predict.job, backend.model.bundle as b; b.load_bundle({str(model_dir)!r})"
    log = RUN_DIR / "baseline.log"
    child = child_run([sys.executable, "-c", code], log)
    if child.status != 0:
        raise UserError(f"the baseline child (import + load model) failed: see {log}")
    return child


def predict_once(
    scene: Path, size: int, model_dir: Path, device: str, cachemax: int | None
) -> dict[str, Any]:
    out = RUN_DIR / str(size)
    command = [
        sys.executable, "-m", "backend", "predict", str(scene),
        "--model", str(model_dir), "--out", str(out), "--device", device,
    ]  # fmt: skip
    log = RUN_DIR / f"{size}.log"
    status(f"{size}²: {' '.join(command[1:])} (progress below, stdout in {log})")
    env = None if cachemax is None else {**os.environ, "GDAL_CACHEMAX": str(cachemax)}
    child = child_run(command, log, env)
    if child.status != 0:
        raise UserError(f"predict on the {size}² scene failed (exit {child.status}); see the lines above")
    run_json = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return {
        "size": size,
        "raster": str(scene),
        "wall_s": child.wall_s,
        "cpu_s": child.cpu_s,
        "peak_rss_mib": child.peak_rss_mib,
        "peak_anon_mib_sampled": child.peak_anon_mib,
        "other_cores": child.other_cores,
        "run_json_peak_mib": run_json.get("peak_memory_mib"),
        "gpu_peak_mib": run_json.get("peak_gpu_memory_mib"),
        "tiles": run_json["tile_count"],
        "stages_s": run_json["seconds"],
        "device": run_json["device"],
    }


def _each_size(scenes: dict, model, device, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One fresh predict process per scene size, each printed as it finishes."""
    columns = (
        ("size", 6),
        ("tiles", 5),
        ("wall s", 7),
        ("s/tile", 6),
        ("cpu/wall", 8),
        ("others", 6),
        ("peak RSS MiB", 12),
        ("run.json MiB", 12),
        ("anon MiB", 8),
    )
    say("  ".join(f"{title:>{width}}" for title, width in columns) + "  GPU MiB")
    results = []
    for size, scene in scenes.items():
        result = predict_once(scene.path, size, model.directory, str(device), args.gdal_cachemax)
        results.append(result)
        say(
            f"{size:>6}  {result['tiles']:>5}  {result['wall_s']:>7.1f}  "
            f"{result['wall_s'] / result['tiles']:>6.3f}  {result['cpu_s'] / result['wall_s']:>8.2f}  "
            f"{fmt(result['other_cores']):>6}  "
            f"{result['peak_rss_mib']:>12.0f}  "
            f"{fmt(result['run_json_peak_mib'], 0):>12}  {fmt(result['peak_anon_mib_sampled'], 0):>8}  "
            f"{fmt(result['gpu_peak_mib'], 0)}"
        )
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    begun = started()
    sizes = parse_sizes(args.sizes)
    device = resolve_device(args.device)
    model = choose_model(args.model)
    scenes = {size: square_scene(size, build=not args.skip_build) for size in sizes}
    machine = describe_machine(device)
    header(
        "memory: peak memory of `python -m backend predict` (entropy), one fresh process per size",
        machine,
        {
            "model": model.description,
            **{f"scene {size}²": scene.description for size, scene in scenes.items()},
            "measure": "peak RSS = ru_maxrss (wait4) of a process forked by a small launcher, its "
            "whole life; run.json's peak_memory_mib (its VmHWM before exit) alongside",
            "GDAL_CACHEMAX": "unset (the CLI caps GDAL's block cache at 64 MiB)"
            if args.gdal_cachemax is None
            else f"{args.gdal_cachemax} MB (--gdal-cachemax)",
            "anon": "the child's RssAnon sampled every 0.2 s: its own memory, without library pages",
            "cpu/wall": "the run's CPU seconds per wall second (≈ threads used)",
            "others": "cores used meanwhile by the rest of the machine (> 0.25: timings suspect)",
        },
    )
    status("baseline: a child that imports the engine and loads the model")
    floor = baseline(model.directory)
    say(
        f"baseline (import engine + load model, no raster): peak RSS {floor.peak_rss_mib:.0f} MiB, "
        f"anonymous {fmt(floor.peak_anon_mib, 0)} MiB"
    )
    results = _each_size(scenes, model, device, args)
    first, last = results[0], results[-1]
    several = len(results) > 1
    growth = ratio(last["peak_rss_mib"], first["peak_rss_mib"]) if several else None
    anon_growth = ratio(last["peak_anon_mib_sampled"], first["peak_anon_mib_sampled"]) if several else None
    gpu_growth = ratio(last["gpu_peak_mib"], first["gpu_peak_mib"]) if several else None
    if growth is not None:
        pair = f"{last['size']}²/{first['size']}²"
        say(
            f"ratio {pair} peak RSS = {fmt(growth)} "
            f"(target ≤ {TARGET_GROWTH} for {2 * BASE_SIZE}²/{BASE_SIZE}²: {against(growth, TARGET_GROWTH)})"
        )
        say(f"ratio {pair} anonymous (sampled) = {fmt(anon_growth)}")
        if gpu_growth is not None:
            say(f"ratio {pair} GPU peak = {fmt(gpu_growth)}")
    busy_warning([r["other_cores"] for r in results], device.type)
    base = next((r for r in results if r["size"] == BASE_SIZE), None)
    if base is not None:
        say(
            f"{BASE_SIZE}² peak RSS {base['peak_rss_mib']:.0f} MiB against the 1.5 GiB target "
            f"({TARGET_MIB:.0f} MiB): {against(base['peak_rss_mib'], TARGET_MIB)}"
        )
    data = {
        "benchmark": NAME,
        "started": begun,
        "machine": machine,
        "model": model.description,
        "measure": "peak_rss_mib: ru_maxrss via wait4 (launcher); "
        "run_json_peak_mib: run.json peak_memory_mib (VmHWM)",
        "gdal_cachemax_mb": args.gdal_cachemax,
        "baseline": asdict(floor),
        "results": results,
        "ratios": {
            "peak_rss_last_over_first": growth,
            "anon_last_over_first": anon_growth,
            "gpu_peak_last_over_first": gpu_growth,
        },
        "targets": {"peak_mib_at_6000": TARGET_MIB, "growth_12000_over_6000": TARGET_GROWTH},
    }
    save(NAME, data)
    return data
