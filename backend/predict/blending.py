"""Accumulating weighted tile outputs over a region and turning them into maps.

Both the whole-raster pass (a strip of rows that slides down the raster) and the incremental
update (the footprint of a recomputed tile) use this, adding tiles in the same global order, so
both give the same pixel the same value (up to float rounding: a convolution's last bits can depend
on which other tiles share its batch).
"""

from __future__ import annotations

import numpy as np
import torch

from ..io.tiling import Tile


class Accumulator:
    """Σ wᵢ·vᵢ and Σ wᵢ over a rectangle ``[row0, row0 + height) × [col0, col0 + width)``."""

    def __init__(self, row0: int, col0: int, height: int, width: int, channels: int, device: torch.device):
        self.row0, self.col0, self.height, self.width = row0, col0, height, width
        self.sum = torch.zeros((channels, height, width), dtype=torch.float32, device=device)
        self.weight = torch.zeros((height, width), dtype=torch.float32, device=device)
        self.valid = np.zeros((height, width), dtype=bool)

    def _overlap(self, tile: Tile) -> tuple[slice, slice, slice, slice] | None:
        r0, r1 = max(tile.row, self.row0), min(tile.row + tile.size, self.row0 + self.height)
        c0, c1 = max(tile.col, self.col0), min(tile.col + tile.size, self.col0 + self.width)
        if r0 >= r1 or c0 >= c1:
            return None
        return (
            slice(r0 - self.row0, r1 - self.row0),
            slice(c0 - self.col0, c1 - self.col0),
            slice(r0 - tile.row, r1 - tile.row),
            slice(c0 - tile.col, c1 - tile.col),
        )

    def add(
        self, tile: Tile, values: torch.Tensor, weights: torch.Tensor, valid: np.ndarray | None = None
    ) -> None:
        """Add one tile's ``values`` (channels × T × T) with blending ``weights`` (T × T)."""
        overlap = self._overlap(tile)
        if overlap is None:
            return
        ry, rx, ty, tx = overlap
        w = weights[ty, tx]
        self.sum[:, ry, rx] += values[:, ty, tx] * w
        self.weight[ry, rx] += w
        if valid is not None:
            self.valid[ry, rx] = valid[ty, tx]

    def blended(self, rows: slice, cols: slice) -> torch.Tensor:
        return self.sum[:, rows, cols] / self.weight[rows, cols].clamp_min(1e-12)

    def shift_up(self, rows: int) -> None:
        """Drop the top ``rows`` rows (finished) and open as many empty rows at the bottom."""
        if rows <= 0:
            return
        rows = min(rows, self.height)
        keep = self.height - rows
        # Move the kept rows up in blocks no taller than the shift: source and destination of a
        # block never overlap, so no temporary copy of the strip is needed.
        for start in range(0, keep, rows):
            n = min(rows, keep - start)
            self.sum[:, start : start + n] = self.sum[:, start + rows : start + rows + n]
            self.weight[start : start + n] = self.weight[start + rows : start + rows + n]
            self.valid[start : start + n] = self.valid[start + rows : start + rows + n]
        self.sum[:, keep:] = 0.0
        self.weight[keep:] = 0.0
        self.valid[keep:] = False
        self.row0 += rows
