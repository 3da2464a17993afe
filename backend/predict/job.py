"""The ``predict`` job: raster + model (+ clicks) → class map, uncertainty, ranked patches.

This is the one entry point the CLI, the QGIS tasks and the Processing algorithms share. With
``cache=True`` it keeps every tile's outputs next to the results; a later run with more clicks
then recomputes only the tiles those clicks touch.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import UserError
from ..io import cache as tile_cache
from ..io.cache import TileCache
from ..io.clicks import Click, clicks_key, read_clicks
from ..io.outputs import (
    CLASSES_FILE,
    PATCHES_FILE,
    RUN_FILE,
    UNCERTAINTY_FILE,
    MapUpdater,
    MapWriter,
    OutputStaging,
    finish_maps,
    write_patches,
)
from ..io.overviews import Rect
from ..io.raster import RasterSource
from ..io.regrid import write_back
from ..io.tiling import Tile, TileGrid, patch_grid
from ..model.bundle import ModelBundle, load_bundle
from ..progress import Monitor
from ..system.diskspace import disk_full_error, is_disk_full
from ..system.runtime import Timings, peak_rss_mb
from .inference import Predictor
from .patch_scores import PatchScores
from .planning import MAIN_FILES, RunPlan
from .reuse import CACHE_DIR, cache_key, reusable_cache
from .uncertainty import ACQUISITIONS, Acquisition
from .updates import fits_one_window, predict_region, update_tiles, window_tiles


@dataclass
class PredictParameters:
    raster: Path
    out_dir: Path
    model_dir: Path | None = None
    bundle: ModelBundle | None = None  # an in-memory model (e.g. adapted by DISCA) instead of model_dir
    model_key: str | None = None  # identifies an in-memory model's weights for the cache
    clicks: Path | None = None
    click_list: list[Click] | None = None  # clicks already on raster pixels, instead of a file
    acquisition: str = "entropy"
    mc_passes: int = 5
    device: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    cache: bool = False
    skip_outside_clicks: bool = False
    refresh_region: tuple[int, int, int, int] | None = None
    """(row0, col0, row1, col1): recompute only the tiles over this window, now, and keep the
    cached tiles elsewhere even if the model changed. A quick preview (the visible extent after
    retraining); a normal run afterwards recomputes everything."""
    pixel_size: float | None = None
    """The raster's pixel size in metres, for one without a CRS (see :mod:`..io.grid`)."""
    precision: str = "auto"
    """``auto``: bfloat16 on a CPU that computes it natively, float16 on a GPU; ``fp32``: float32."""
    held_classes: tuple[int, ...] = ()
    """Classes kept off the map: those a session's last round held (:mod:`.held_classes`)."""
    patch_score: str = "mean"
    """How the patches are ranked (:data:`.patch_scores.PATCH_SCORES`): ``class-weighted`` where
    clicks only correct (AC), the ``mean`` uncertainty where they also retrain."""


@dataclass
class PredictReport:
    out_dir: Path
    run: dict[str, Any]
    notices: list[str] = field(default_factory=list)

    @property
    def classes(self) -> Path:
        return self.out_dir / CLASSES_FILE

    @property
    def uncertainty(self) -> Path:
        return self.out_dir / UNCERTAINTY_FILE

    @property
    def patches(self) -> Path:
        return self.out_dir / PATCHES_FILE


def run_predict(params: PredictParameters, monitor: Monitor | None = None) -> PredictReport:
    monitor = monitor or Monitor()
    timings = Timings()
    started = time.perf_counter()
    if params.acquisition not in ACQUISITIONS:
        raise UserError(f"unknown acquisition '{params.acquisition}' (choose {', '.join(ACQUISITIONS)})")
    with timings.stage("load_model"):
        monitor.report(0.0, "loading the model")
        bundle = params.bundle or _load(params.model_dir)
    with timings.stage("open_raster"):
        source = RasterSource(params.raster, bundle.card.input, params.pixel_size)
    with source:
        if not source.has_valid_pixels():
            raise UserError(f"every pixel of {source.info.path.name} is nodata: nothing to predict")
        run = _predict(params, bundle, source, monitor, timings, started)
    monitor.report(1.0, "done")
    return PredictReport(Path(params.out_dir), run, run["notices"])


def _predict(
    params: PredictParameters,
    bundle: ModelBundle,
    source: RasterSource,
    monitor: Monitor,
    timings: Timings,
    started: float,
) -> dict[str, Any]:
    """Everything after the model and the raster are open; returns run.json's content."""
    card, info = bundle.card, source.info
    notices = list(info.notices) + source.scaling.notices
    if source.grid.scaled and (params.cache or params.refresh_region):
        # The tile cache holds tiles of the network's grid; the published maps are on the raster's.
        notices.append("on a resampled grid every update predicts the whole raster (no tile cache)")
        params = replace(params, cache=False, refresh_region=None)
    with timings.stage("read_clicks"):
        clicks, outside = _clicks(params, source, card, notices)
    acquisition = Acquisition(params.acquisition, mc_passes=params.mc_passes, mc_rate=card.mc_dropout_rate)
    owns = params.bundle is None  # a model only for predicting: its BatchNorms may be folded
    predictor = Predictor(
        bundle, params.device, acquisition, params.tile, params.overlap, params.batch_size, owns_network=owns,
        precision=params.precision,
    )  # fmt: skip
    predictor.held_classes = tuple(params.held_classes)
    plan = RunPlan.of(
        Path(params.out_dir), info, predictor.tile, predictor.overlap, predictor.channels,
        predictor.device.type, params.cache,
    )  # fmt: skip
    if not plan.may_update:  # before anything the size of the raster is built
        plan.check_full_run(monitor)
    grid = TileGrid(info.width, info.height, predictor.tile, predictor.overlap)
    patch_size = params.patch_size or predictor.tile
    patches = patch_grid(info.width, info.height, patch_size)
    scores = PatchScores(patches, patch_size, info.width, card.n_classes, params.patch_score)
    key = cache_key(params, bundle, source, predictor, patch_size)
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    job = _Job(
        params, predictor, source, clicks, grid, scores, OutputStaging(params.out_dir), monitor, timings
    )
    try:
        mode, tiles_done, cache = _compute(job, plan, key)
        monitor.check()
        if source.grid.scaled:
            with timings.stage("write_back"):
                monitor.report(0.955, "writing the maps on the raster's own grid")
                write_back(job.staging.path, source.grid, card, list(card.input.bands))
        ranked = _finish(job, card, acquisition)
        timings.seconds["total"] = time.perf_counter() - started
        run = _record(params, source, predictor, timings, notices)
        run |= {
            "patch_size": patch_size,
            "tile_count": len(grid),
            "tiles_computed": tiles_done,
            "mode": mode,
            "clicks": {"used": len(clicks), "outside": len(outside)},
            "patches_ranked": ranked,
            "patch_score": params.patch_score,
        }
        if predictor.device.type == "cuda":
            run["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(predictor.device) / 2**20, 1)
        job.staging.publish(run)
        if cache is not None:
            # After a region refresh the tiles come from two models: no model's cache any more.
            cache.mark_ready(
                clicks_key(clicks), scores.as_json(), {**key, "model": "mixed"} if mode == "region" else None
            )
    except BaseException as exc:
        if job.created_cache or not tile_cache.is_ready(job.cache_dir):  # half-written: free the space
            tile_cache.discard(job.cache_dir)
        job.staging.abandon()
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(Path(params.out_dir)) from None
        raise
    return run


def _record(
    params: PredictParameters,
    source: RasterSource,
    predictor: Predictor,
    timings: Timings,
    notices: list[str],
) -> dict[str, Any]:
    """run.json's description of the run: what was read, with which model, how, how long."""
    info = source.info
    return {
        "engine_version": __version__,
        "raster": str(Path(params.raster).resolve()),
        "width": source.grid.raster.width,
        "height": source.grid.raster.height,
        "crs": info.crs_label,
        "model_grid": source.grid.describe() if source.grid.scaled else None,
        **predictor.describe(),
        "normalization": source.scaling.description,
        "seconds": timings.rounded(),
        "peak_memory_mib": round(peak_rss_mb(), 1),
        "notices": notices,
    }


@dataclass
class _Job:
    """One prediction's parts, handed between its steps."""

    params: PredictParameters
    predictor: Predictor
    source: RasterSource
    clicks: list[Click]
    grid: TileGrid
    scores: PatchScores
    staging: OutputStaging
    monitor: Monitor
    timings: Timings
    created_cache: bool = False
    changed: list[Rect] | None = None
    """The windows an update in place rewrote (None: the whole maps were written)."""

    @property
    def cache_dir(self) -> Path:
        return Path(self.params.out_dir) / CACHE_DIR


def _compute(job: _Job, plan: RunPlan, key: dict[str, Any]) -> tuple[str, int, TileCache | None]:
    """The maps, staged: an update in place of an earlier cached run where it can be, else a
    whole-raster run. Returns the mode, the tiles computed and the cache (if any)."""
    params, predictor = job.params, job.predictor
    radius = predictor.card.clicks.radius
    cache, touched = reusable_cache(params, job.cache_dir, key, job.clicks, job.grid, radius)
    if cache is not None and touched is not None:
        plan.check_update()
        info = job.source.info
        region = _clipped(params.refresh_region, info.height, info.width)
        if region is not None and not fits_one_window(region, info.height, info.width):
            touched = sorted({*touched, *job.grid.tiles_intersecting(*region)}, key=lambda t: t.index)
            region = None
        job.changed = [t.footprint(info.height, info.width) for t in touched] + ([region] if region else [])
        tiles = _incremental(job, touched, cache, region)
        return ("region" if params.refresh_region else "incremental"), tiles, cache
    if plan.may_update:
        plan.check_full_run(job.monitor)
    if params.cache:
        cache = TileCache.create(job.cache_dir, len(job.grid), predictor.channels, predictor.tile, key)
        job.created_cache = True
    else:
        tile_cache.discard(job.cache_dir)  # it would no longer match the published maps
    monitor = job.monitor.scaled(0.0, 0.95)
    tiles = _full(
        predictor,
        job.source,
        job.clicks,
        cache,
        job.staging,
        job.scores,
        predictor.card,
        monitor,
        job.timings,
    )
    return "full", tiles, cache


def _finish(job: _Job, card: Any, acquisition: Acquisition) -> int:
    """Overviews, styles and the ranked patches in the staging folder; returns how many patches."""
    with job.timings.stage("overviews"):
        job.monitor.report(0.96, "building overviews")
        tags = {"model": card.name, "acquisition": acquisition.name}
        finish_maps(job.staging.path, card, tags, fixed_range=not acquisition.per_tile, changed=job.changed)
    with job.timings.stage("patches"):
        patch_scores = job.scores.patch_scores()
        return write_patches(job.staging.file(PATCHES_FILE), job.source.info, patch_scores, acquisition.name)


def _load(model_dir: Path | None) -> ModelBundle:
    if model_dir is None:
        raise UserError("no model given (--model DIR)")
    return load_bundle(model_dir)


def _clicks(
    params: PredictParameters, source: RasterSource, card: Any, notices: list[str]
) -> tuple[list[Click], list]:
    if params.click_list is not None:  # raster pixels (a session's): onto the network's grid
        return source.grid.clicks_to_model(params.click_list), []
    if params.clicks is None:
        return [], []
    if not card.clicks.enabled:
        raise UserError(f"model '{card.name}' takes no click channels; retrain on the clicks instead")
    loaded = read_clicks(params.clicks, source.info, card)
    notices.extend(loaded.notices)
    if loaded.outside:
        message = loaded.describe_outside()
        if not params.skip_outside_clicks or not loaded.clicks:
            hint = "" if loaded.clicks else " (none is inside)"
            raise UserError(f"{message}{hint}; check the clicks' CRS or pass --skip-outside-clicks")
        notices.append(message + " — skipped")
    return loaded.clicks, loaded.outside


def _full(
    predictor: Predictor,
    source: RasterSource,
    clicks: list[Click],
    cache: TileCache | None,
    staging: OutputStaging,
    scores: PatchScores,
    card: Any,
    monitor: Monitor,
    timings: Timings,
) -> int:
    writer = MapWriter(staging.path, source.info, card)
    try:
        with timings.stage("predict"):
            return predictor.predict_raster(source, clicks, writer, scores, cache, monitor)
    finally:
        writer.close()


def _incremental(
    job: _Job, touched: list[Tile], cache: TileCache, region: tuple[int, int, int, int] | None
) -> int:
    """The previous maps updated in place: ``touched`` tiles recomputed and blended with the
    cached ones, then ``region`` (if any) predicted in one piece. Returns the tiles computed (the
    region's window counted as the tiles its area makes: the dock estimates times from them)."""
    params, predictor, scores = job.params, job.predictor, job.scores
    previous = json.loads((Path(params.out_dir) / RUN_FILE).read_text())
    for name in previous.get("files", MAIN_FILES):
        shutil.copy2(Path(params.out_dir) / name, job.staging.file(name))
    scores.load_json(cache.meta()["patches"])
    cache.mark_updating()
    maps = MapUpdater(job.staging.path)
    try:
        with job.timings.stage("predict"):
            if touched:
                monitor = job.monitor.scaled(0.0, 0.95 if region is None else 0.5)
                update_tiles(predictor, job.source, job.clicks, touched, cache, maps, scores, monitor)
            if region is not None:
                job.monitor.check()
                job.monitor.report(0.5 if touched else 0.0, "predicting the visible extent")
                predict_region(predictor, job.source, job.clicks, region, maps, scores)
    finally:
        maps.close()
    if region is None:
        return len(touched)
    info = job.source.info
    return len(touched) + window_tiles(region, info.height, info.width, predictor.tile)


def _clipped(
    region: tuple[int, int, int, int] | None, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """``region`` (row0, col0, row1, col1) inside the raster; None if it has no pixel there."""
    if region is None:
        return None
    row0, col0 = max(region[0], 0), max(region[1], 0)
    row1, col1 = min(region[2], height), min(region[3], width)
    return (row0, col0, row1, col1) if row1 > row0 and col1 > col0 else None
