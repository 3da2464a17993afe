"""Internal overviews refreshed over the windows an update changed, equal to GDAL's own.

An AC update or the redraw after a round rewrites a few tiles, and rebuilding every overview
level of the whole maps costs far more than those tiles on a large raster. GDAL 3.6 has no
partial refresh (``gdaladdo -partial_refresh_from_projwin`` came with 3.8), so each level is
recomputed here over the changed windows from the next finer level, by GDAL's rule for levels
that halve exactly: nearest keeps the top-left pixel of each 2×2 block, average the float64
mean of its valid pixels (NaN is nodata) — the pixels ``build_overviews`` writes (tested).
The small levels from the first inexact halving on are rebuilt whole by GDAL; anything else is
left to a full rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
from osgeo import gdal
from rasterio.enums import Resampling

MAX_SHARE = 0.25
"""Refresh windows covering at most this share of the raster; over more, GDAL's full rebuild
(in C, on every core) is as quick: 0.14 against 0.18 s for a 1280² window of a 2048² map, where
at 6144² it is 1.15 against 0.20 s (the uncertainty map; the class map 0.78 against 0.19 s)."""

Rect = tuple[int, int, int, int]
"""row0, col0, row1, col1 in base pixels, end-exclusive."""


def merged(rects: Sequence[Rect]) -> list[Rect]:
    """Rectangles joined wherever their bounding box is no larger than the two apart (overlapping
    tiles), so no window is refreshed twice and distant ones stay apart."""
    out = list(rects)
    joined = True
    while joined:
        joined = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                box = _bounding(out[i], out[j])
                if _area(box) <= _area(out[i]) + _area(out[j]):
                    out[i] = box
                    del out[j]
                    joined = True
                    break
            if joined:
                break
    return out


def refresh_overviews(path: Path, rects: Sequence[Rect], resampling: Resampling) -> bool:
    """Recompute ``path``'s overviews over ``rects``; False, with nothing written, where this
    module cannot match GDAL (no overviews, a first level that does not halve exactly, average
    without NaN as nodata) or would not be quicker (see :data:`MAX_SHARE`): the caller rebuilds.

    Levels from the first that does not halve exactly on (6000 px: factor 32, 188 px) are small:
    GDAL rebuilds each whole from the next finer level, as ``build_overviews`` does.
    """
    dataset = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_UPDATE, open_options=["NUM_THREADS=ALL_CPUS"])
    try:
        base = dataset.GetRasterBand(1)
        levels = [base.GetOverview(i) for i in range(base.GetOverviewCount())]
        exact = _halving_levels([(band.YSize, band.XSize) for band in (base, *levels)])
        nodata = base.GetNoDataValue()
        nan_nodata = nodata is not None and np.isnan(nodata)
        supported = resampling == Resampling.nearest or (resampling == Resampling.average and nan_nodata)
        windows = merged(rects)
        small = sum(_area(w) for w in windows) <= MAX_SHARE * base.XSize * base.YSize
        if not exact or not supported or not small:
            return False
        for row0, col0, row1, col1 in windows:
            source = base
            for level in levels[:exact]:
                row0, col0 = row0 // 2, col0 // 2
                row1, col1 = min(-(-row1 // 2), level.YSize), min(-(-col1 // 2), level.XSize)
                if row1 <= row0 or col1 <= col0:
                    break
                values = source.ReadAsArray(2 * col0, 2 * row0, 2 * (col1 - col0), 2 * (row1 - row0))
                level.WriteArray(_halved(values, resampling), col0, row0)
                source = level
        for above, level in pairwise(levels[exact - 1 :]):
            gdal.RegenerateOverview(above, level, resampling.name.upper())
        dataset.FlushCache()
        return True
    finally:
        dataset = None  # closes it (GDAL 3.6's bindings have no Close)


def _halving_levels(sizes: Sequence[tuple[int, int]]) -> int:
    """How many overview levels, from the first, are exactly half the one above."""
    count = 0
    for (height, width), (level_height, level_width) in pairwise(sizes):
        if height != 2 * level_height or width != 2 * level_width:
            break
        count += 1
    return count


def _halved(values: np.ndarray, resampling: Resampling) -> np.ndarray:
    if resampling == Resampling.nearest:
        return values[::2, ::2]
    height, width = values.shape[0] // 2, values.shape[1] // 2
    blocks = values.reshape(height, 2, width, 2).astype(np.float64)
    count = np.count_nonzero(~np.isnan(blocks), axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(blocks, axis=(1, 3)) / count
    return np.where(count > 0, mean, np.nan).astype(values.dtype)


def _bounding(a: Rect, b: Rect) -> Rect:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _area(rect: Rect) -> int:
    return (rect[2] - rect[0]) * (rect[3] - rect[1])
