"""What a prediction will cost before it starts: its tiles and the disk space for its outputs.

A run whose outputs cannot fit is refused up front; a long one is announced (its size here, its
time after the first batch, see ``backend.predict.inference._announce_duration``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import cache as tile_cache
from ..io.outputs import CLASSES_FILE, PATCHES_FILE, RUN_FILE, UNCERTAINTY_FILE
from ..io.tiling import check_tiling, tile_offsets
from ..progress import Monitor
from ..system.diskspace import free_bytes, megabytes, require_space
from .reuse import CACHE_DIR

MAIN_FILES = (CLASSES_FILE, UNCERTAINTY_FILE, PATCHES_FILE)
MAP_BYTES_PER_PIXEL = 4.5
"""Disk use of the class map and the uncertainty heatmap per pixel, with their overviews: deflate
barely compresses float32 uncertainty (4.34 bytes per pixel in all on Dubai tile 2, 3.6 on
random pixels; 6.7 uncompressed), so this is a little above what real imagery takes."""
ANNOUNCE_TILES = 64
"""Runs with at least this many tiles state their size, and later their estimated time, first."""


@dataclass(frozen=True)
class RunPlan:
    out: Path
    width: int
    height: int
    tile: int
    device: str
    tiles: int
    cache_bytes: int  # 0 without a tile cache
    may_update: bool  # an earlier cached run is there: the run may update it in place

    @classmethod
    def of(
        cls, out: Path, info: Any, tile: int, overlap: int, channels: int, device: str, cache: bool
    ) -> RunPlan:
        """Counted from the grid's offsets alone: nothing the size of the raster is built."""
        check_tiling(tile, overlap)
        tiles = len(tile_offsets(info.height, tile, overlap)) * len(tile_offsets(info.width, tile, overlap))
        cache_bytes = tiles * channels * tile**2 * 4 if cache else 0
        may_update = cache and (out / RUN_FILE).is_file()
        return cls(out, info.width, info.height, tile, device, tiles, cache_bytes, may_update)

    def check_full_run(self, monitor: Monitor) -> None:
        """Refuse a whole-raster run whose outputs cannot fit; announce a long one (tiles, device,
        output size). The old cache's space counts as free: a new run replaces it."""
        maps = int(self.width * self.height * MAP_BYTES_PER_PIXEL)
        old_cache = self.out / CACHE_DIR / tile_cache.TILES_FILE
        free = free_bytes(self.out) + (old_cache.stat().st_size if old_cache.is_file() else 0)
        if maps + self.cache_bytes > free:
            cache_part = f" and the tile cache {megabytes(self.cache_bytes)}" if self.cache_bytes else ""
            raise UserError(
                f"not enough space in {self.out}: the maps need about {megabytes(maps)}{cache_part}, "
                f"{megabytes(free)} free"
            )
        if self.tiles >= ANNOUNCE_TILES:
            cache_part = f" + {megabytes(self.cache_bytes)} tile cache" if self.cache_bytes else ""
            monitor.notice(
                f"{self.width} × {self.height} px: {self.tiles} tiles of {self.tile} px on "
                f"{self.device}; outputs about {megabytes(maps)}{cache_part} in {self.out} "
                f"({megabytes(free)} free)"
            )

    def check_update(self) -> None:
        """An update in place needs room for a copy of the published maps."""
        previous = json.loads((self.out / RUN_FILE).read_text()).get("files", MAIN_FILES)
        sizes = sum((self.out / n).stat().st_size for n in previous if (self.out / n).is_file())
        require_space(self.out, sizes, "the maps")
