"""One window of a raster, predicted exactly as the whole-raster pass predicts it.

A distributed run splits a large raster into blocks. Re-tiling each block on its own would move
the tiles, and with them the blend, so every block here works on the tile grid of the WHOLE
raster: it computes the grid's tiles that reach into the window (the halo is whatever part of
those tiles lies outside it, at least the overlap), adds them to a strip in the grid's order, as
:meth:`Predictor.predict_raster` does, and finishes only the window's pixels. Each pixel then sees
the same tiles, with the same weights, added in the same order: the same value, bit for bit,
wherever the tiles' network outputs are (one tile per batch, the CPU default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..io.clicks import Click
from ..io.outputs import MapBlock
from ..io.raster import RasterSource
from ..io.tiling import Tile, TileGrid
from ..progress import Monitor
from ..system.runtime import synchronize
from .blending import Accumulator
from .inference import FINISH_COLUMNS, FINISH_ROWS, Predictor

Window = tuple[int, int, int, int]
"""(row0, col0, row1, col1) in the raster's pixels, end exclusive."""


def window_tiles(grid: TileGrid, window: Window) -> list[list[Tile]]:
    """The grid's tiles that reach into ``window``, by tile row (top to bottom), in grid order."""
    row0, col0, row1, col1 = window
    rows = [[t for t in row if t.intersects(row0, col0, row1, col1)] for row in grid.rows()]
    return [row for row in rows if row]


def predict_window(
    predictor: Predictor,
    source: RasterSource,
    clicks: Sequence[Click],
    window: Window,
    write: Callable[[MapBlock], None],
    patch_size: int,
    monitor: Monitor | None = None,
) -> int:
    """Predict ``window`` and hand its finished blocks (raster coordinates) to ``write``.

    ``window``'s left edge must lie on a patch boundary: every block starts on one, so patch
    scores can be summed from them. Returns the number of tiles computed.
    """
    monitor = monitor or Monitor()
    info = source.info
    row0, col0, row1, col1 = window
    assert col0 % patch_size == 0, "a window starts on a patch boundary"
    grid = TileGrid(info.width, info.height, predictor.tile, predictor.overlap)
    weights = torch.from_numpy(grid.weights).to(predictor.device)
    rows = window_tiles(grid, window)
    total = sum(len(row) for row in rows)
    starts = [row[0].row for row in grid.rows()]
    strip = Accumulator(
        rows[0][0].row, col0, predictor.tile, col1 - col0, predictor.channels, predictor.device
    )
    width = patch_size * max(1, FINISH_COLUMNS // patch_size)  # whole patches per finished block
    done = 0
    for row_tiles in rows:
        strip.shift_up(row_tiles[0].row - strip.row0)
        for tiles, inputs, valids in predictor.batches(source, row_tiles, clicks):
            monitor.check()
            outputs = predictor.forward(inputs, [t.index for t in tiles], source)
            for tile, values, valid in zip(tiles, outputs, valids, strict=True):
                strip.add(tile, values, weights, valid)
            done += len(tiles)
            monitor.report(done / total, f"tile {done}/{total}")
        following = starts.index(row_tiles[0].row) + 1
        end = min(starts[following] if following < len(starts) else info.height, row1)
        top = max(strip.row0, row0)  # rows above the window belong to another block
        for first in range(top, end, FINISH_ROWS):
            for left in range(col0, col1, width):
                write(
                    predictor.finish(
                        strip,
                        slice(first - strip.row0, min(first + FINISH_ROWS, end) - strip.row0),
                        slice(left - col0, min(left + width, col1) - col0),
                    )
                )
    synchronize(predictor.device)
    return done
