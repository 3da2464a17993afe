"""The coordinator's part once blocks are in: each input's mosaic, then the run's ``run.json``.

Both are published like any prediction: staged in a hidden folder, moved into place with
``run.json`` last, and only over files this program wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..io.outputs import OutputStaging
from ..system.diskspace import disk_full_error, is_disk_full
from ..system.runtime import Timings
from .connection import Cluster
from .mosaic import (
    clear_block_staging,
    heatmap_range,
    input_maps,
    merged_histogram,
    mosaic_problem,
    write_input_mosaic,
    write_run_mosaic,
)
from .parameters import ManyJob
from .planning import MOSAIC_FILES, TOP_FILES, InputPlan, finished


def _model(job: ManyJob) -> dict[str, Any]:
    card = job.card
    return {
        "name": card.name,
        "version": card.version,
        "sha256": card.weights_sha256,
        "folder": str(job.model_dir),
    }


def block_runs(plan: InputPlan) -> dict[str, dict[str, Any]]:
    """Every block's ``run.json``; a block reported done whose files are not here means the
    workers wrote somewhere else."""
    runs = {}
    for task in plan.blocks:
        run = finished(task.folder, task.key)
        if run is None:
            where = f"block {task.label} of {task.name}" if task.label else task.name
            raise UserError(
                f"{where} was reported finished but {task.folder} does not hold it: do the workers "
                "write to the same output folder as this machine?"
            )
        runs[task.label] = run
    return runs


def finish_input(job: ManyJob, plan: InputPlan) -> None:
    """Once all of ``plan``'s blocks are finished: a split input's VRTs, styles, patches, run.json."""
    runs = block_runs(plan)
    clear_block_staging(plan)
    if plan.whole:
        return  # its one block wrote a whole prediction
    layout, acquisition = job.layout, job.layout.acquisition
    staging = OutputStaging(plan.folder, names=MOSAIC_FILES)
    try:
        extras = write_input_mosaic(
            staging.path, plan, runs, job.card, acquisition.name, acquisition.per_tile, layout.patch_size
        )
        run = {
            "engine_version": __version__,
            "task_key": plan.key,
            "raster": str(plan.raster),
            "width": plan.info.width,
            "height": plan.info.height,
            "crs": plan.info.crs_label,
            "model": _model(job),
            "acquisition": acquisition.name,
            "tile_size": layout.tile,
            "overlap": layout.overlap,
            "patch_size": layout.patch_size,
            "block_size": layout.block,
            "blocks": [t.label for t in plan.blocks],
            "tile_count": plan.grid_tiles,
            "tiles_computed": sum(r.get("tiles_computed", 0) for r in runs.values()),
            "mode": "blocks",
            **extras,
            "notices": plan.notices,
        }
        staging.publish(run)
    except BaseException as exc:
        staging.abandon()
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(plan.folder) from None
        raise


def reused_entry(run: dict[str, Any], name: str, label: str) -> dict[str, Any]:
    """What run.json says of a block an earlier run finished."""
    worker = run.get("worker", {})
    return {
        "input": name,
        "block": label or None,
        "status": "reused",
        "tiles": run.get("tiles_computed"),
        "seconds": run.get("seconds", {}).get("total"),
        "model_loaded": False,
        "started": run.get("started"),
        **worker,
    }


def publish_run(
    job: ManyJob, cluster: Cluster | None, tasks: list[dict[str, Any]], timings: Timings
) -> dict[str, Any]:
    """``OUT/run.json`` (and the mosaic over every input when they can be placed together)."""
    out, layout = job.out, job.layout
    notices = list(job.notices)
    problem = mosaic_problem(job.plans)
    if problem is not None and len(job.plans) > 1:
        notices.append(f"no mosaic over every input: {problem}")
    staging = OutputStaging(out, names=TOP_FILES)
    try:
        if problem is None:
            runs = [r for plan in job.plans for r in block_runs(plan).values()]
            span = heatmap_range(merged_histogram(runs)) if layout.acquisition.per_tile else (0.0, 1.0)
            write_run_mosaic(staging.path, out, job.plans, job.card, span)
        computed = [t for t in tasks if t["status"] == "computed"]
        compute_seconds = timings.seconds.get("compute", 0.0)
        run = {
            "engine_version": __version__,
            "command": "predict-many",
            "cluster": _cluster_entry(job, cluster),
            "model": _model(job),
            "acquisition": layout.acquisition.name,
            "device": job.params.device,
            "tile_size": layout.tile,
            "overlap": layout.overlap,
            "patch_size": layout.patch_size,
            "block_size": layout.block,
            "inputs": [_input_entry(plan, out) for plan in job.plans],
            "blocks": {"total": len(tasks), "computed": len(computed), "reused": len(tasks) - len(computed)},
            "tiles_computed": sum(t["tiles"] for t in computed),
            "blocks_per_second": round(len(computed) / compute_seconds, 4)
            if computed and compute_seconds
            else None,
            "tasks": sorted(tasks, key=lambda t: (t["input"], t["block"] or "")),
            "seconds": timings.rounded(),
            "notices": notices,
        }
        staging.publish(run)
    except BaseException as exc:
        staging.abandon()
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(out) from None
        raise
    return run


def _input_entry(plan: InputPlan, out: Path) -> dict[str, Any]:
    classes, uncertainty = input_maps(plan)
    return {
        "name": plan.name,
        "raster": str(plan.raster),
        "width": plan.info.width,
        "height": plan.info.height,
        "blocks": len(plan.blocks),
        "tile_count": plan.grid_tiles,
        "classes": str(classes.relative_to(out)),
        "uncertainty": str(uncertainty.relative_to(out)),
        "patches": str((plan.folder / "patches.gpkg").relative_to(out)),
    }


def _cluster_entry(job: ManyJob, cluster: Cluster | None) -> dict[str, Any]:
    if cluster is None:
        return {"scheduler": None, "note": "every block was already finished: no cluster was needed"}
    return {
        "scheduler": cluster.description,
        "local": cluster.local,
        "dashboard": cluster.dashboard,
        "workers": [{"address": a, "pid": w["pid"], "cores": w["cores"]} for a, w in cluster.workers.items()],
        "torch_threads": job.params.torch_threads or dict(cluster.threads_by_host),
    }
