"""The task a worker runs: one block of one raster, written atomically into its own folder.

Its outputs are staged in a hidden folder named after the worker's host and process and moved
into place when complete, ``run.json`` (with the task's key) last: a block is either finished or
absent, whatever happens to the worker, and a rerun recognises the finished ones. A staging
folder that a dead worker left is cleared by the next task on that host that writes there.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..io.outputs import PATCHES_FILE, OutputStaging, finish_maps, write_patches
from ..io.raster import BandScaling, RasterSource
from ..model.card import InputSpec
from ..predict.window import predict_window
from ..system.diskspace import disk_full_error, is_disk_full
from ..system.runtime import Timings, peak_rss_mb
from .blockmaps import BlockMaps, to_cog
from .planning import BlockTask
from .worker import TaskSettings, predictor_for, this_worker

STAGING_PREFIX = ".sial-block-"


class PlannedSource(RasterSource):
    """A raster opened with the normalisation the coordinator computed once for all its blocks
    (a percentile stretch would otherwise re-read the whole raster in every block)."""

    def __init__(self, path: str | Path, spec: InputSpec, scaling: BandScaling):
        self._planned = scaling
        super().__init__(path, spec)

    def _scaling(self) -> BandScaling:
        return self._planned


def staging_prefix() -> str:
    """``.sial-block-<host>-``: only this host's dead staging folders are ever cleared here."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
    return f"{STAGING_PREFIX}{host}-"


def run_block(settings: TaskSettings, task: BlockTask) -> dict[str, Any]:
    """Predict ``task``'s block and publish it; returns what the run's ``run.json`` keeps of it."""
    started, clock, timings = time.time(), time.perf_counter(), Timings()
    with timings.stage("load_model"):
        predictor, loaded = predictor_for(settings)
    worker = this_worker()
    where = {
        "address": worker.address if worker else "local",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    staging = OutputStaging(task.folder, prefix=staging_prefix())
    try:
        run, tiles = _compute(settings, task, predictor, staging, timings)
        timings.seconds["total"] = time.perf_counter() - clock
        run.update(
            seconds=timings.rounded(), peak_memory_mib=round(peak_rss_mb(), 1), worker=where,
            model_loaded=loaded, started=started,
        )  # fmt: skip
        staging.publish(run)
    except BaseException as exc:
        staging.abandon()
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(task.folder) from None
        raise
    return {
        "input": task.name,
        "block": task.label or None,
        "status": "computed",
        "tiles": tiles,
        "seconds": round(time.perf_counter() - clock, 3),
        "model_loaded": loaded,
        "started": started,
        "finished": time.time(),
        **where,
    }


def _compute(
    settings: TaskSettings, task: BlockTask, predictor: Any, staging: OutputStaging, timings: Timings
) -> tuple[dict[str, Any], int]:
    """The block's maps (and, for a whole input, its ranked patches) in the staging folder."""
    card, acquisition = predictor.card, predictor.acquisition
    with PlannedSource(task.raster, card.input, task.scaling) as source:
        info = source.info
        maps = BlockMaps(staging.path, info, task.window, card, settings.patch_size, task.whole,
                         acquisition.per_tile)  # fmt: skip
        try:
            with timings.stage("predict"):
                tiles = predict_window(predictor, source, [], task.window, maps.write, settings.patch_size)
        finally:
            maps.close()
    with timings.stage("overviews"):
        tags = {"model": card.name, "acquisition": acquisition.name}
        finish_maps(staging.path, card, tags, fixed_range=not acquisition.per_tile)
        to_cog(staging.path)
    run: dict[str, Any] = {
        "engine_version": __version__,
        "task_key": task.key,
        "raster": str(task.raster),
        "width": info.width,
        "height": info.height,
        "block": task.label or None,
        "window": list(task.window),
        "crs": info.crs_label,
        **predictor.describe(),
        "patch_size": settings.patch_size,
        "tile_count": task.tiles,
        "tiles_computed": tiles,
        "mode": "full" if task.whole else "block",
        "normalization": task.scaling.description,
        "notices": list(info.notices) + list(task.scaling.notices),
    }
    if task.whole:
        with timings.stage("patches"):
            run["patches_ranked"] = write_patches(
                staging.file(PATCHES_FILE), info, maps.patch_scores(), acquisition.name
            )
    else:
        run["patch_sums"] = maps.scores.as_json()
    run["histogram"] = None if maps.histogram is None else maps.histogram.tolist()
    return run, tiles
