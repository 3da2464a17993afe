"""The ``predict`` job: raster + model (+ clicks) → class map, uncertainty, ranked patches.

This is the one entry point the CLI, the QGIS tasks and the Processing algorithms share. With
``cache=True`` it keeps every tile's outputs next to the results; a later run with more clicks
then recomputes only the tiles those clicks touch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
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
    PatchScore,
    finish_maps,
    write_patches,
)
from ..io.raster import RasterSource
from ..io.tiling import Tile, TileGrid, check_tiling, patch_grid, tile_offsets
from ..model.bundle import ModelBundle, load_bundle
from ..progress import Monitor
from ..system.diskspace import disk_full_error, free_bytes, is_disk_full, megabytes, require_space
from ..system.runtime import Timings, describe_device, peak_rss_mb
from .inference import PatchScores, Predictor
from .uncertainty import ACQUISITIONS, Acquisition

CACHE_DIR = ".sial-cache"
"""The per-tile cache inside the output folder: a name this program owns (it never touches a
``.cache`` the user or another tool keeps there)."""
MAIN_FILES = (CLASSES_FILE, UNCERTAINTY_FILE, PATCHES_FILE)
MAP_BYTES_PER_PIXEL = 4.5
"""Disk use of the class map and the uncertainty heatmap per pixel, with their overviews: deflate
barely compresses float32 uncertainty (4.34 bytes per pixel in all on Dubai tile 2, 3.6 on
random pixels; 6.7 uncompressed), so this is a little above what real imagery takes."""
ANNOUNCE_TILES = 64
"""Runs with at least this many tiles state their size, and later their estimated time, first."""


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
        source = RasterSource(params.raster, bundle.card.input)
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
    with timings.stage("read_clicks"):
        clicks, outside = _clicks(params, source, card, notices)
    acquisition = Acquisition(params.acquisition, mc_passes=params.mc_passes, mc_rate=card.mc_dropout_rate)
    predictor = Predictor(
        bundle,
        params.device,
        acquisition,
        params.tile,
        params.overlap,
        params.batch_size,
        owns_network=params.bundle is None,
    )
    check_tiling(predictor.tile, predictor.overlap)
    tiles = len(tile_offsets(info.height, predictor.tile, predictor.overlap)) * len(
        tile_offsets(info.width, predictor.tile, predictor.overlap)
    )
    cache_bytes = tiles * predictor.channels * predictor.tile**2 * 4 if params.cache else 0
    may_update = params.cache and (Path(params.out_dir) / RUN_FILE).is_file()
    if not may_update:  # before anything the size of the raster is built
        _check_space(params, info, tiles, predictor, cache_bytes, monitor)
    grid = TileGrid(info.width, info.height, predictor.tile, predictor.overlap)
    patch_size = params.patch_size or predictor.tile
    scores = PatchScores(patch_grid(info.width, info.height, patch_size), patch_size, info.width)
    cache_dir = Path(params.out_dir) / CACHE_DIR
    key = _cache_key(params, bundle, source, predictor, patch_size)
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    staging = OutputStaging(params.out_dir)
    created_cache, mode = False, "full"
    try:
        cache, touched = _reusable_cache(params, cache_dir, key, clicks, grid, card.clicks.radius)
        if cache is not None and touched is not None:
            mode = "region" if params.refresh_region else "incremental"
            _check_space(params, info, tiles, predictor, None, monitor)
            tiles_done = _incremental(
                predictor, source, clicks, touched, cache, staging, scores, params, monitor, timings
            )
        else:
            mode = "full"
            if may_update:
                _check_space(params, info, tiles, predictor, cache_bytes, monitor)
            if params.cache:
                cache = TileCache.create(cache_dir, len(grid), predictor.channels, predictor.tile, key)
                created_cache = True
            else:
                tile_cache.discard(cache_dir)  # it would no longer match the published maps
            tiles_done = _full(
                predictor, source, clicks, cache, staging, scores, card, monitor.scaled(0.0, 0.95), timings
            )
        monitor.check()
        with timings.stage("overviews"):
            monitor.report(0.96, "building overviews")
            tags = {"model": card.name, "acquisition": acquisition.name}
            finish_maps(staging.path, card, tags, fixed_range=not acquisition.per_tile)
        with timings.stage("patches"):
            patch_scores = [
                PatchScore(p, scores.score(p.index), scores.valid_fraction(p.index)) for p in scores.patches
            ]
            ranked = write_patches(staging.file(PATCHES_FILE), info, patch_scores, acquisition.name)
        timings.seconds["total"] = time.perf_counter() - started
        run = {
            "engine_version": __version__,
            "raster": str(Path(params.raster).resolve()),
            "width": info.width,
            "height": info.height,
            "crs": info.crs_label,
            "model": {"name": card.name, "version": card.version, "sha256": card.weights_sha256},
            "device": describe_device(predictor.device),
            "device_type": predictor.device.type,
            "acquisition": acquisition.name,
            "tile_size": predictor.tile,
            "overlap": predictor.overlap,
            "batch_size": predictor.batch_size,
            "patch_size": patch_size,
            "tile_count": len(grid),
            "tiles_computed": tiles_done,
            "mode": mode,
            "clicks": {"used": len(clicks), "outside": len(outside)},
            "patches_ranked": ranked,
            "normalization": source.scaling.description,
            "seconds": timings.rounded(),
            "peak_memory_mib": round(peak_rss_mb(), 1),
            "notices": notices,
        }
        if predictor.device.type == "cuda":
            run["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(predictor.device) / 2**20, 1)
        staging.publish(run)
        if cache is not None:
            # After a region refresh the tiles come from two models: no model's cache any more.
            cache_key = {**key, "model": "mixed"} if mode == "region" else None
            cache.mark_ready(clicks_key(clicks), scores.as_json(), cache_key)
    except BaseException as exc:
        if created_cache or not tile_cache.is_ready(cache_dir):  # half-written: free their space
            tile_cache.discard(cache_dir)
        staging.abandon()
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(Path(params.out_dir)) from None
        raise
    return run


def _check_space(
    params: PredictParameters,
    info: Any,
    tiles: int,
    predictor: Predictor,
    cache_bytes: int | None,
    monitor: Monitor,
) -> None:
    """Refuse a run whose outputs cannot fit; announce a long one (tiles, device, output size).

    ``cache_bytes`` is None for an update in place, which needs room for a copy of the maps.
    """
    out = Path(params.out_dir)
    if cache_bytes is None:
        previous = json.loads((out / RUN_FILE).read_text()).get("files", MAIN_FILES)
        require_space(out, sum((out / n).stat().st_size for n in previous if (out / n).is_file()), "the maps")
        return
    maps = int(info.width * info.height * MAP_BYTES_PER_PIXEL)
    old_cache = out / CACHE_DIR / tile_cache.TILES_FILE
    reclaimed = old_cache.stat().st_size if old_cache.is_file() else 0
    free = free_bytes(out) + reclaimed
    if maps + cache_bytes > free:
        cache_part = f" and the tile cache {megabytes(cache_bytes)}" if cache_bytes else ""
        raise UserError(
            f"not enough space in {out}: the maps need about {megabytes(maps)}{cache_part}, "
            f"{megabytes(free)} free"
        )
    if tiles >= ANNOUNCE_TILES:
        cache_part = f" + {megabytes(cache_bytes)} tile cache" if cache_bytes else ""
        monitor.notice(
            f"{info.width} × {info.height} px: {tiles} tiles of {predictor.tile} px on "
            f"{predictor.device.type}; outputs about {megabytes(maps)}{cache_part} in {out} "
            f"({megabytes(free)} free)"
        )


def _load(model_dir: Path | None) -> ModelBundle:
    if model_dir is None:
        raise UserError("no model given (--model DIR)")
    return load_bundle(model_dir)


def _clicks(
    params: PredictParameters, source: RasterSource, card: Any, notices: list[str]
) -> tuple[list[Click], list]:
    if params.click_list is not None:
        return list(params.click_list), []
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


def _cache_key(
    params: PredictParameters,
    bundle: ModelBundle,
    source: RasterSource,
    predictor: Predictor,
    patch_size: int,
) -> dict[str, Any]:
    stat = Path(params.raster).stat()
    return {
        "raster": str(Path(params.raster).resolve()),
        "raster_size": stat.st_size,
        "raster_mtime_ns": stat.st_mtime_ns,
        "model": params.model_key or bundle.card.weights_sha256 or bundle.card.name,
        "tile": predictor.tile,
        "overlap": predictor.overlap,
        "patch_size": patch_size,
        "acquisition": dataclasses.asdict(predictor.acquisition),
        "device": predictor.device.type,
        "normalization": source.scaling.description,
        "engine": __version__,
    }


def _reusable_cache(
    params: PredictParameters,
    cache_dir: Path,
    key: dict[str, Any],
    clicks: list[Click],
    grid: TileGrid,
    radius: int,
) -> tuple[TileCache | None, list[Tile] | None]:
    """The cache and the tiles to recompute, when the previous run can be updated in place."""
    if not params.cache:
        return None, None
    out = Path(params.out_dir)
    if not all((out / name).is_file() for name in (*MAIN_FILES, RUN_FILE)):
        return None, None
    region = params.refresh_region
    cache = TileCache.open(cache_dir, key, ignore=("model",) if region else ())
    if cache is None:
        return None, None
    previous = {tuple(c) for c in cache.meta()["clicks"]}
    changed = previous.symmetric_difference(clicks_key(clicks))
    touched = {t.index for row, col, _ in changed for t in grid.tiles_within_distance(row, col, radius)}
    if region is not None:
        touched |= {t.index for t in grid.tiles_intersecting(*region)}
    if len(touched) >= len(grid) and region is None:
        return None, None
    return cache, [grid.tiles[i] for i in sorted(touched)]


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
    predictor: Predictor,
    source: RasterSource,
    clicks: list[Click],
    touched: list[Tile],
    cache: TileCache,
    staging: OutputStaging,
    scores: PatchScores,
    params: PredictParameters,
    monitor: Monitor,
    timings: Timings,
) -> int:
    previous = json.loads((Path(params.out_dir) / RUN_FILE).read_text())
    for name in previous.get("files", MAIN_FILES):
        shutil.copy2(Path(params.out_dir) / name, staging.file(name))
    scores.load_json(cache.meta()["patches"])
    cache.mark_updating()
    maps = MapUpdater(staging.path)
    try:
        with timings.stage("predict"):
            predictor.update_tiles(source, clicks, touched, cache, maps, scores, monitor.scaled(0.0, 0.95))
    finally:
        maps.close()
    return len(touched)
