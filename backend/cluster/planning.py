"""Cutting the inputs into blocks, naming their outputs, and knowing which are already done.

A raster no larger than a block is one task that writes a whole prediction into
``OUT/<name>/``. A larger one is cut into blocks of ``block`` × ``block`` pixels from its top
left corner, each written into ``OUT/<name>/blocks/<row>-<col>/``. Blocks are whole numbers of
patches, so every patch lies in one block and its score is that block's. Every task carries a
key (raster, model, tiling, acquisition, window); a block whose ``run.json`` holds the same key
and whose files are all there is finished, and a rerun skips it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..io.outputs import PATCHES_FILE, PUBLISHED_FILES, RUN_FILE
from ..io.raster import BandScaling, RasterInfo
from ..io.tiling import tile_offsets
from ..predict.planning import MAP_BYTES_PER_PIXEL
from ..predict.uncertainty import Acquisition
from ..predict.window import Window
from ..system.diskspace import free_bytes, megabytes
from ..system.ownership import check_folder

DEFAULT_BLOCK = 4096
BLOCKS_DIR = "blocks"
CLASSES_VRT = "classes.vrt"
UNCERTAINTY_VRT = "uncertainty.vrt"
MOSAIC_FILES = (CLASSES_VRT, UNCERTAINTY_VRT, "classes.qml", "uncertainty.qml", PATCHES_FILE, RUN_FILE)
"""What a split input publishes in ``OUT/<name>/`` once all its blocks are done."""
TOP_FILES = (CLASSES_VRT, UNCERTAINTY_VRT, "classes.qml", "uncertainty.qml", RUN_FILE)
"""What the whole run publishes in ``OUT``: the mosaic over every input, and its run.json."""


@dataclass(frozen=True)
class Layout:
    """What every block of a run shares: the grid, the patches, the block size, the model."""

    tile: int
    overlap: int
    patch_size: int
    block: int
    model: str  # the weights' SHA-256 (or the model's name)
    acquisition: Acquisition
    precision: str = "auto"

    def check(self) -> None:
        if self.patch_size < 1:
            raise UserError(f"patch size must be positive, not {self.patch_size}")
        if self.block < self.patch_size or self.block % self.patch_size:
            hint = max(1, round(self.block / self.patch_size)) * self.patch_size
            raise UserError(
                f"block size {self.block} is not a multiple of the patch size {self.patch_size}: "
                f"blocks hold whole patches (try --block {hint})"
            )


@dataclass(frozen=True)
class BlockTask:
    """One task: a window of one input, and where its outputs go."""

    raster: Path
    name: str  # the input's folder name in the output
    label: str  # "<row>-<col>" of the block, "" for an input in one block
    window: Window
    folder: Path
    key: dict[str, Any]
    scaling: BandScaling  # computed once for the whole raster, so every block normalises alike
    tiles: int

    @property
    def whole(self) -> bool:
        return self.label == ""

    @property
    def pixels(self) -> int:
        row0, col0, row1, col1 = self.window
        return (row1 - row0) * (col1 - col0)


@dataclass
class InputPlan:
    raster: Path
    name: str
    folder: Path
    info: RasterInfo
    key: dict[str, Any]
    grid_tiles: int
    blocks: list[BlockTask]
    notices: list[str]

    @property
    def whole(self) -> bool:
        return len(self.blocks) == 1 and self.blocks[0].whole


def block_windows(width: int, height: int, block: int) -> list[tuple[str, Window]]:
    if width <= block and height <= block:
        return [("", (0, 0, height, width))]
    return [
        (f"{i}-{j}", (row, col, min(row + block, height), min(col + block, width)))
        for i, row in enumerate(range(0, height, block))
        for j, col in enumerate(range(0, width, block))
    ]


def tiles_reaching(offsets: list[int], tile: int, start: int, end: int) -> int:
    """How many tiles along one axis reach into [start, end), counted from the offsets alone."""
    return bisect.bisect_left(offsets, end) - bisect.bisect_right(offsets, start - tile)


def plan_input(
    raster: Path, name: str, out: Path, info: RasterInfo, scaling: BandScaling, layout: Layout
) -> InputPlan:
    """The blocks of one input; nothing the size of the raster is built."""
    stat = raster.stat()
    key = {
        "engine": __version__,
        "raster": str(raster),
        "raster_size": stat.st_size,
        "raster_mtime_ns": stat.st_mtime_ns,
        "width": info.width,
        "height": info.height,
        "model": layout.model,
        "tile": layout.tile,
        "overlap": layout.overlap,
        "patch_size": layout.patch_size,
        "block": layout.block,
        "acquisition": dataclasses.asdict(layout.acquisition),
        "precision": layout.precision,
        "normalization": scaling.description,
    }
    rows = tile_offsets(info.height, layout.tile, layout.overlap)
    cols = tile_offsets(info.width, layout.tile, layout.overlap)
    folder = out / name
    blocks = []
    for label, window in block_windows(info.width, info.height, layout.block):
        row0, col0, row1, col1 = window
        tiles = tiles_reaching(rows, layout.tile, row0, row1) * tiles_reaching(cols, layout.tile, col0, col1)
        where = folder / BLOCKS_DIR / label if label else folder
        blocks.append(
            BlockTask(raster, name, label, window, where, {**key, "window": list(window)}, scaling, tiles)
        )
    notices = list(info.notices) + list(scaling.notices)
    return InputPlan(raster, name, folder, info, key, len(rows) * len(cols), blocks, notices)


def finished(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The ``run.json`` of a finished task or input with this key (its files all there), or None."""
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict) or run.get("task_key") != key:
        return None
    files = run.get("files", [])
    return run if all((folder / str(name)).is_file() for name in files) else None


def check_outputs(plans: list[InputPlan], out: Path) -> None:
    """Before any work: refuse a file in the way that this program did not write."""
    check_folder(out, TOP_FILES)
    for plan in plans:
        check_folder(plan.folder, PUBLISHED_FILES if plan.whole else MOSAIC_FILES)
        for task in plan.blocks:
            if not task.whole:
                check_folder(task.folder, PUBLISHED_FILES)


def check_space(out: Path, pending: list[BlockTask], slots: int) -> None:
    """Refuse a run whose maps cannot fit; each running task also holds a second copy of its maps
    while it lays them out as COGs."""
    sizes = [int(t.pixels * MAP_BYTES_PER_PIXEL) for t in pending]
    needed = sum(sizes) + max(sizes, default=0) * max(1, min(slots, len(pending)))
    free = free_bytes(out)
    if needed > free:
        raise UserError(
            f"not enough space in {out}: the maps need about {megabytes(needed)}, {megabytes(free)} free"
        )
