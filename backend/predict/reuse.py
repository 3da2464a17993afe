"""When an earlier run's tiles can be kept: the tile cache's key and the tiles to recompute.

With ``cache=True`` a prediction keeps every tile's outputs next to its results
(:mod:`backend.io.cache`); a later run with more clicks then recomputes only the tiles those
clicks touch, and a refresh of a region only the tiles over it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .. import __version__
from ..io.cache import TileCache
from ..io.clicks import Click, clicks_key
from ..io.outputs import CLASSES_FILE, PATCHES_FILE, RUN_FILE, UNCERTAINTY_FILE
from ..io.raster import RasterSource
from ..io.tiling import Tile, TileGrid
from ..model.bundle import ModelBundle
from .inference import Predictor
from .patch_scores import PATCH_SUMS

CACHE_DIR = ".sial-cache"
"""The per-tile cache inside the output folder: a name this program owns (it never touches a
``.cache`` the user or another tool keeps there)."""


def cache_key(
    params: Any,
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
        "precision": predictor.precision,
        "held_classes": list(predictor.held_classes),
        "patch_sums": PATCH_SUMS,
        "normalization": source.scaling.description,
        "engine": __version__,
    }


def reusable_cache(
    params: Any,
    cache_dir: Path,
    key: dict[str, Any],
    clicks: list[Click],
    grid: TileGrid,
    radius: int,
) -> tuple[TileCache | None, list[Tile] | None]:
    """The cache and the tiles the changed clicks touch, when the previous run can be updated in
    place (a region to refresh is the caller's to add)."""
    if not params.cache:
        return None, None
    out = Path(params.out_dir)
    if not all((out / name).is_file() for name in (CLASSES_FILE, UNCERTAINTY_FILE, PATCHES_FILE, RUN_FILE)):
        return None, None
    region = params.refresh_region
    # A round changes the weights and what it holds off the map; a region refresh is its preview.
    cache = TileCache.open(cache_dir, key, ignore=("model", "held_classes") if region else ())
    if cache is None:
        return None, None
    previous = {tuple(c) for c in cache.meta()["clicks"]}
    changed = previous.symmetric_difference(clicks_key(clicks))
    touched = {t.index for row, col, _ in changed for t in grid.tiles_within_distance(row, col, radius)}
    if len(touched) >= len(grid) and region is None:
        return None, None
    return cache, [grid.tiles[i] for i in sorted(touched)]
