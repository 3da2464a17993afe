"""A block's own maps: GeoTIFFs on the block's part of the grid, its patch sums, its histogram.

Blocks are written as Cloud-Optimized GeoTIFFs (tiled, deflate, overviews before the pixels), so
a mosaic of thousands of them still draws fast and can be served over HTTP as it is.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from affine import Affine
from osgeo import gdal

from ..io.outputs import BLOCK, CLASSES_FILE, UNCERTAINTY_FILE, MapBlock, MapWriter, PatchScore
from ..io.raster import RasterInfo
from ..io.tiling import patch_grid
from ..model.card import ModelCard
from ..predict.patch_scores import PatchScores
from ..predict.window import Window

HISTOGRAM_BINS = 1000
"""Uncertainty histogram over [0, 1] per block: a mosaic's heatmap range (2nd–98th percentile)
comes from the sum over its blocks, to 1/1000."""
COG_OPTIONS = ("COMPRESS=DEFLATE", "LEVEL=1", "PREDICTOR=YES", f"BLOCKSIZE={BLOCK}",
               "OVERVIEWS=FORCE_USE_EXISTING", "BIGTIFF=IF_SAFER")  # fmt: skip


def block_info(info: RasterInfo, window: Window) -> RasterInfo:
    """The raster's description for a window of it: its size, and the grid moved to its corner.

    A raster without georeferencing gets QGIS's pixel convention, so its blocks still lie side
    by side.
    """
    row0, col0, row1, col1 = window
    transform = info.map_transform * Affine.translation(col0, row0)
    return dataclasses.replace(
        info, width=col1 - col0, height=row1 - row0, transform=transform, georeferenced=True
    )


class BlockMaps:
    """Receives a window's finished blocks (raster coordinates) and writes them in block coordinates."""

    def __init__(
        self, directory: Path, info: RasterInfo, window: Window, card: ModelCard, patch_size: int,
        whole: bool, histogram: bool,
    ):  # fmt: skip
        self.row0, self.col0 = window[0], window[1]
        self.info = info if whole else block_info(info, window)
        self.writer = MapWriter(directory, self.info, card, threads=torch.get_num_threads())  # its share
        patches = patch_grid(self.info.width, self.info.height, patch_size)
        self.scores = PatchScores(patches, patch_size, self.info.width, card.n_classes)
        self.histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64) if histogram else None

    def write(self, block: MapBlock) -> None:
        local = MapBlock(block.row - self.row0, block.col - self.col0, block.classes, block.uncertainty,
                         block.valid)  # fmt: skip
        self.writer.write(local)
        self.scores.add(local)
        if self.histogram is not None:
            values = block.uncertainty[block.valid]
            self.histogram += np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]

    def close(self) -> None:
        self.writer.close()

    def patch_scores(self) -> list[PatchScore]:
        return self.scores.patch_scores()


def to_cog(directory: Path) -> None:
    """Rewrite both maps in COG layout, keeping their overviews, colours, names and tags."""
    for name in (CLASSES_FILE, UNCERTAINTY_FILE):
        source = directory / name
        target = directory / f"cog-{name}"
        gdal.Translate(str(target), str(source), format="COG", creationOptions=list(COG_OPTIONS))
        os.replace(target, source)
        aux, old_aux = Path(f"{target}.aux.xml"), Path(f"{source}.aux.xml")
        if aux.exists():
            os.replace(aux, old_aux)
        else:
            old_aux.unlink(missing_ok=True)
