"""The ``predict-many`` job: many rasters, or one huge mosaic, predicted on a Dask cluster.

Everything the run can refuse is refused before any file is written or any worker started: the
model, every input, the settings, files in the way. The blocks are then scheduled; each one
publishes itself atomically, so a run that is cancelled, loses its client or crashes keeps its
finished blocks, and the same command resumes with the missing ones. A worker lost mid-task has
its task run again elsewhere by the scheduler (Dask's ``allowed-failures``, 3 by default).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io.raster import RasterSource
from ..io.tiling import check_tiling
from ..model.bundle import load_bundle
from ..predict.uncertainty import ACQUISITIONS, Acquisition
from ..progress import Monitor
from ..system.runtime import Timings, resolve_device
from .connection import Cluster, open_cluster
from .finish import finish_input, publish_run, reused_entry
from .inputs import discover_inputs, output_names
from .parameters import ManyJob, ManyParameters, ManyReport
from .planning import BlockTask, Layout, check_outputs, check_space, finished, plan_input
from .tasks import run_block
from .worker import TaskSettings

POLL_SECONDS = 0.2
"""How often the coordinator looks for finished blocks and for a cancel request."""
PROBE_PREFIX = ".sial-probe-"


def run_predict_many(params: ManyParameters, monitor: Monitor | None = None) -> ManyReport:
    monitor = monitor or Monitor()
    timings, started = Timings(), time.perf_counter()
    with timings.stage("plan"):
        monitor.report(0.0, "checking the model and the inputs")
        job = plan_job(params)
    for notice in job.notices:
        monitor.notice(notice)
    created = not job.out.exists()
    cluster: Cluster | None = None
    with contextlib.ExitStack() as stack:
        try:
            if job.pending:  # a rerun of a finished run starts no cluster
                with timings.stage("cluster"):
                    cluster = stack.enter_context(
                        open_cluster(params.scheduler, params.workers, job.device_type,
                                     params.connect_timeout, monitor, params.python)
                    )  # fmt: skip
                    _check_cluster(job, cluster)
                with timings.stage("compute"):
                    results = _compute(cluster, job.settings(cluster), job, monitor.scaled(0.02, 0.97))
            else:
                results = []
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    job.out.rmdir()  # only when nothing was written
            raise
        with timings.stage("finish"):
            monitor.report(0.98, "writing the mosaics and run.json")
            for plan in job.plans:
                if finished(plan.folder, plan.key) is None:
                    finish_input(job, plan)
            tasks = results + [reused_entry(run, name, label) for (name, label), run in job.reused.items()]
            timings.seconds["total"] = time.perf_counter() - started
            run = publish_run(job, cluster, tasks, timings)
    monitor.report(1.0, "done")
    return ManyReport(job.out, run, run["notices"])


def plan_job(params: ManyParameters) -> ManyJob:
    """Everything that can be refused, refused now: nothing is written and no worker started."""
    if params.acquisition not in ACQUISITIONS:
        raise UserError(f"unknown acquisition '{params.acquisition}' (choose {', '.join(ACQUISITIONS)})")
    if params.model_dir is None:
        raise UserError("no model given (--model DIR)")
    _check_numbers(params)
    bundle = load_bundle(params.model_dir)
    card = bundle.card
    if params.acquisition == "confidnet" and bundle.confidnet is None:
        raise UserError(
            f"model '{card.name}' has no ConfidNet head: train one with "
            "`python -m backend confidnet MODEL --config CONFIG`"
        )
    tile = params.tile or card.tiling.tile_size
    overlap = card.tiling.overlap if params.overlap is None else params.overlap
    check_tiling(tile, overlap)
    acquisition = Acquisition(params.acquisition, mc_passes=params.mc_passes, mc_rate=card.mc_dropout_rate)
    layout = Layout(tile, overlap, params.patch_size or tile, params.block, card.weights_sha256 or card.name,
                    acquisition, params.precision)  # fmt: skip
    layout.check()
    out = Path(params.out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    device_type = "cpu" if params.scheduler else resolve_device(params.device).type
    rasters = discover_inputs(params.inputs, out)
    plans = []
    for raster, name in zip(rasters, output_names(rasters), strict=True):
        with RasterSource(raster, card.input) as source:
            if not source.has_valid_pixels():
                raise UserError(f"every pixel of {raster.name} is nodata: nothing to predict")
            if source.grid.scaled:
                size = source.grid.pixel_size_m or 0.0
                gsd = float(f"{size / source.grid.factor:.4g}")  # the pixel size the model reads at
                raise UserError(
                    f"{raster.name} has {size:.3g}-m pixels and the model reads {gsd:g}-m ones: "
                    f"predict-many does not resample; warp it first (gdalwarp -tr {gsd:g} {gsd:g} …) "
                    "or use `predict`"
                )
            plans.append(plan_input(raster, name, out, source.info, source.scaling, layout))
    check_outputs(plans, out)
    reused = {}
    for task in (t for p in plans for t in p.blocks):
        run = finished(task.folder, task.key)
        if run is not None:
            reused[(task.name, task.label)] = run
    notices = [n for p in plans for n in p.notices]
    model_dir = Path(bundle.directory or params.model_dir).absolute()
    return ManyJob(params, out, model_dir, card, layout, plans, reused, device_type, notices)


def _check_numbers(params: ManyParameters) -> None:
    """The counts a user types: each one positive (or left to its default)."""
    counts = {
        "block size": params.block,
        "batch size": params.batch_size,
        "number of workers": params.workers,
        "number of torch threads": params.torch_threads,
        "number of MC dropout passes": params.mc_passes if params.acquisition == "mcdropout" else None,
    }
    for what, value in counts.items():
        if value is not None and value < 1:
            raise UserError(f"{what} must be at least 1, not {value}")
    if not params.connect_timeout > 0:
        raise UserError(f"the connect timeout must be positive, not {params.connect_timeout} s")


def _check_cluster(job: ManyJob, cluster: Cluster) -> None:
    """Workers see the inputs, the model and this output folder; the outputs fit on the disk."""
    token = secrets.token_hex(8)
    probe = job.out / f"{PROBE_PREFIX}{os.getpid()}-{token}"
    try:
        job.out.mkdir(parents=True, exist_ok=True)
        probe.write_text(token, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write in the output folder {job.out}: {exc.strerror or exc}") from None
    try:
        paths = [str(p.raster) for p in job.plans] + [str(job.model_dir)]
        cluster.check(paths, str(probe), token, job.params.device)
    finally:
        probe.unlink(missing_ok=True)
    check_space(job.out, job.pending, cluster.slots)


def _compute(
    cluster: Cluster, settings: TaskSettings, job: ManyJob, monitor: Monitor
) -> list[dict[str, Any]]:
    """Schedule every pending block; finish each input as its last block comes in."""
    from distributed import as_completed

    client, pending = cluster.client, job.pending
    total_tiles = max(1, sum(t.tiles for t in pending))
    left = {p.name: sum(1 for t in pending if t.name == p.name) for p in job.plans}
    plans = {p.name: p for p in job.plans}
    run_id = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            run_block, settings, t, key=f"sial-{t.name}-{t.label or 'whole'}-{run_id}", pure=False
        ): t
        for t in pending
    }
    results: list[dict[str, Any]] = []
    done_tiles = 0
    completed = as_completed(list(futures), loop=client.loop)
    monitor.report(0.0, f"0/{len(futures)} blocks")
    try:
        while len(results) < len(futures):
            monitor.check()
            if not completed.has_ready():
                time.sleep(POLL_SECONDS)
                continue
            for future in completed.next_batch(block=False):
                if future.status in ("lost", "pending"):  # its worker died after it finished
                    completed.add(future)  # the scheduler runs it again: wait for that
                    continue
                task = futures[future]
                results.append(_result(future, task))
                done_tiles += task.tiles
                left[task.name] -= 1
                if left[task.name] == 0:
                    finish_input(job, plans[task.name])
                monitor.report(done_tiles / total_tiles, f"{len(results)}/{len(futures)} blocks")
    except BaseException:
        client.cancel([f for f in futures if not f.done()])
        raise
    return results


def _result(future: Any, task: BlockTask) -> dict[str, Any]:
    """A finished block's summary, or the one clear error its failure means."""
    from distributed import KilledWorker

    where = f"block {task.label} of {task.name}" if task.label else task.name
    if future.status == "finished":
        return future.result()
    exc = future.exception() if future.status == "error" else None
    if isinstance(exc, UserError):
        raise UserError(str(exc)) from None
    if isinstance(exc, KilledWorker):
        raise UserError(
            f"{where} was lost with every worker that ran it (out of memory? see the workers' logs); "
            "the finished blocks are kept: rerun the same command to resume"
        ) from None
    if exc is None:
        raise UserError(
            f"the Dask scheduler dropped {where} (was it stopped or restarted?); the finished blocks "
            "are kept: rerun the same command to resume"
        )
    raise exc
