"""The overlapping tile grid and the weights that blend tiles into one seamless map.

Along each axis the first tile starts at the raster's edge and the last ends at the opposite
edge (edge tiles are shifted inside, so every tile is whole); the tiles between are spread
evenly, at most ``tile - overlap`` apart, so every overlap is at least ``overlap``. Spreading the
edge shift over the whole row, instead of piling it onto the last tile, keeps any pixel under at
most two tiles per axis on large rasters: a click then touches at most four tiles. A raster
smaller than one tile gets a single tile, padded. Overlapping predictions are blended with weights
that fall off smoothly towards tile borders (never to zero, so raster borders covered by one tile
still count).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import UserError

NETWORK_STRIDE = 32
"""Encoders downsample five times; tile sides must be multiples of this."""

EDGE_WEIGHT = 1e-3


@dataclass(frozen=True)
class Tile:
    index: int
    row: int
    col: int
    size: int

    def intersects(self, row0: int, col0: int, row1: int, col1: int) -> bool:
        return (
            self.row < row1
            and row0 < self.row + self.size
            and self.col < col1
            and col0 < self.col + self.size
        )

    def footprint(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the tile inside a ``height`` × ``width`` raster."""
        return self.row, self.col, min(self.row + self.size, height), min(self.col + self.size, width)


def tile_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: from 0 to ``length - tile``, evenly, ≤ ``tile - overlap`` apart."""
    if length <= tile:
        return [0]
    span = length - tile
    steps = -(-span // (tile - overlap))  # ceil
    return [round(i * span / steps) for i in range(steps + 1)]


@dataclass(frozen=True)
class ContextWindow:
    """A rectangle of pixels read and predicted in one piece (:func:`context_window`)."""

    row: int
    col: int
    height: int
    width: int


def _context_span(start: int, stop: int, margin: int, length: int) -> tuple[int, int]:
    """One axis of :func:`context_window`: (start, size)."""
    low, high = max(start - margin, 0), min(stop + margin, length)
    size = -(-(high - low) // NETWORK_STRIDE) * NETWORK_STRIDE
    low = max(min(low, length - size), 0)  # grow back into the raster where it has room
    return low, size


def context_window(region: tuple[int, int, int, int], margin: int, height: int, width: int) -> ContextWindow:
    """A window over ``region`` (row0, col0, row1, col1) and ``margin`` px of context around it,
    inside a ``height`` × ``width`` raster, its sides multiples of the network's stride (it
    reaches past the raster's far edge only when the raster is smaller than that)."""
    row, rows = _context_span(region[0], region[2], margin, height)
    col, cols = _context_span(region[1], region[3], margin, width)
    return ContextWindow(row, col, rows, cols)


def check_tiling(tile: int, overlap: int) -> None:
    if tile < NETWORK_STRIDE or tile % NETWORK_STRIDE:
        raise UserError(f"tile size must be a positive multiple of {NETWORK_STRIDE}, not {tile}")
    if not 0 <= overlap < tile:
        raise UserError(f"overlap must be at least 0 and less than the tile size ({tile}), not {overlap}")


class TileGrid:
    """All tiles over a ``width`` × ``height`` raster, in row-major order."""

    def __init__(self, width: int, height: int, tile: int = 512, overlap: int = 128):
        check_tiling(tile, overlap)
        self.width, self.height, self.tile, self.overlap = width, height, tile, overlap
        self.row_offsets = tile_offsets(height, tile, overlap)
        self.col_offsets = tile_offsets(width, tile, overlap)
        self.tiles = [
            Tile(i * len(self.col_offsets) + j, row, col, tile)
            for i, row in enumerate(self.row_offsets)
            for j, col in enumerate(self.col_offsets)
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def rows(self) -> list[list[Tile]]:
        """Tiles grouped by row offset, top to bottom."""
        n = len(self.col_offsets)
        return [self.tiles[i * n : (i + 1) * n] for i in range(len(self.row_offsets))]

    def tiles_intersecting(self, row0: int, col0: int, row1: int, col1: int) -> list[Tile]:
        return [t for t in self.tiles if t.intersects(row0, col0, row1, col1)]

    def tiles_within_distance(self, row: int, col: int, radius: float) -> list[Tile]:
        """Tiles holding a pixel whose centre lies closer than ``radius`` to pixel (row, col)."""
        touched = []
        for t in self.tiles:
            dy = max(t.row - row, 0, row - (t.row + t.size - 1))
            dx = max(t.col - col, 0, col - (t.col + t.size - 1))
            if dy * dy + dx * dx < radius * radius:
                touched.append(t)
        return touched

    @cached_property
    def weights(self) -> np.ndarray:
        """Blending weights of one tile, ``tile`` × ``tile`` float32."""
        return blend_weights(self.tile, self.overlap)


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """Separable raised-cosine ramp over ``overlap`` pixels at each border, 1 inside."""
    if overlap == 0:
        return np.ones((tile, tile), dtype=np.float32)
    distance = np.minimum(np.arange(tile), np.arange(tile)[::-1]) + 0.5
    ramp = np.clip(distance / overlap, 0.0, 1.0)
    profile = np.maximum(0.5 - 0.5 * np.cos(np.pi * ramp), EDGE_WEIGHT).astype(np.float32)
    return np.outer(profile, profile)


@dataclass(frozen=True)
class Patch:
    """A cell of the non-overlapping grid that the analyst works through, clipped to the raster."""

    index: int
    row: int
    col: int
    height: int
    width: int


def patch_grid(width: int, height: int, size: int) -> list[Patch]:
    if size < 1:
        raise UserError(f"patch size must be positive, not {size}")
    patches = []
    for row in range(0, height, size):
        for col in range(0, width, size):
            patches.append(Patch(len(patches), row, col, min(size, height - row), min(size, width - col)))
    return patches
