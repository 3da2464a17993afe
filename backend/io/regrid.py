"""The maps computed on a resampled model grid, written back on the raster's own grid.

Window by window (never a whole-raster array): each block of the output reads the model-grid
pixels under it; classes by nearest neighbour (a class is never blended), uncertainty bilinearly.
NaN (nodata) uncertainty stays NaN, and the class map's nodata follows the input's own mask, so
the edges of the outputs are the input's, not the coarser grid's.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..model.card import ModelCard
from .grid import ModelGrid
from .outputs import CLASS_NODATA, CLASSES_FILE, UNCERTAINTY_FILE, MapBlock, MapWriter

ROWS = 512
"""Output rows per block."""


def write_back(folder: Path, grid: ModelGrid, card: ModelCard, bands: list[int]) -> None:
    """Replace ``folder``'s model-grid class and uncertainty maps by maps on the raster's grid;
    the input's own masks (of ``bands``) say which pixels are valid."""
    sources = {name: folder / f".model-grid-{name}" for name in (CLASSES_FILE, UNCERTAINTY_FILE)}
    for name, moved in sources.items():
        os.replace(folder / name, moved)
    raster = grid.raster
    writer = MapWriter(folder, raster, card)
    fy = grid.info.height / raster.height
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            opened = (
                rasterio.open(p) for p in (sources[CLASSES_FILE], sources[UNCERTAINTY_FILE], raster.path)
            )
            with next(opened) as classes, next(opened) as heat, next(opened) as original:
                for row in range(0, raster.height, ROWS):
                    height = min(ROWS, raster.height - row)
                    window = Window(0, row * fy, grid.info.width, height * fy)
                    shape = (height, raster.width)
                    block_classes = classes.read(
                        1, window=window, out_shape=shape, resampling=Resampling.nearest
                    )
                    smooth = heat.read(1, window=window, out_shape=shape, resampling=Resampling.bilinear)
                    nearest = heat.read(1, window=window, out_shape=shape, resampling=Resampling.nearest)
                    masks = original.read_masks(bands, window=Window(0, row, raster.width, height))
                    valid = np.all(masks > 0, axis=0)
                    block_classes[~valid] = CLASS_NODATA
                    block_heat = np.where(np.isnan(smooth), nearest, smooth)  # next to nodata
                    block_heat = np.where(valid, np.nan_to_num(block_heat), np.nan).astype(np.float32)
                    writer.write(MapBlock(row, 0, block_classes, block_heat, valid))
    finally:
        writer.close()
        for moved in sources.values():
            moved.unlink(missing_ok=True)
