"""The grid the network sees a raster on: the raster's own, or one resampled to the model's GSD.

A model trained on 0.5-m imagery sees a 7.7-cm drone image as ten times too close: every house
fills a tile. So a raster whose pixel size (from its CRS, or given by the user) differs from the
card's ``gsd_m`` by more than :data:`TOLERANCE` is read on a resampled grid, window by window
(a ``WarpedVRT``, never a copy of the whole raster). A card whose training zoomed its crops
(``gsd_range_m``) reads any pixel size within that range as it is, and others at the nearer end:
detail the network was taught to use is not thrown away. Everything the network touches — tiles,
clicks, patches, DISCA's crops — lives on that grid; the maps are written back on the raster's own
grid (:mod:`.regrid`). Clicks are stored in raster pixels and converted at this boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
from affine import Affine

from ..errors import UserError
from .rasterinfo import RasterInfo

TOLERANCE = 0.1
"""Pixel sizes within 10 % of the model's are used as they are (resampling blurs a little)."""
METRES_PER_DEGREE = 111_320.0
C = TypeVar("C")  # a click (io/clicks.py): a dataclass with row and col


@dataclass(frozen=True)
class ModelGrid:
    raster: RasterInfo  # the file's own grid
    info: RasterInfo  # the grid the network sees (the same object when not resampled)
    factor: float  # model pixels per raster pixel (< 1: the raster is finer than the model)
    pixel_size_m: float | None  # the raster's pixel size, metres (None: unknown)

    @property
    def scaled(self) -> bool:
        return self.factor != 1.0

    def to_model(self, row: int, col: int) -> tuple[int, int]:
        """The model-grid pixel whose area holds the centre of raster pixel (row, col)."""
        if not self.scaled:
            return row, col
        fy, fx = self.info.height / self.raster.height, self.info.width / self.raster.width
        return min(int((row + 0.5) * fy), self.info.height - 1), min(
            int((col + 0.5) * fx), self.info.width - 1
        )

    def clicks_to_model(self, clicks: Sequence[C]) -> list[C]:
        """Clicks on raster pixels (as sessions store them), on this grid's pixels."""
        return [replace(c, row=r, col=k) for c in clicks for r, k in [self.to_model(c.row, c.col)]]

    def window_to_model(self, row0: int, col0: int, row1: int, col1: int) -> tuple[int, int, int, int]:
        """A raster-pixel window (rows and columns, end excluded) on the model grid, covering it."""
        fy, fx = self.info.height / self.raster.height, self.info.width / self.raster.width
        return (
            max(int(row0 * fy), 0),
            max(int(col0 * fx), 0),
            min(math.ceil(row1 * fy), self.info.height),
            min(math.ceil(col1 * fx), self.info.width),
        )

    def to_raster_array(self, values: np.ndarray) -> np.ndarray:
        """A model-grid array (H × W, in memory) on the raster's grid, nearest neighbour: for
        scoring against labels; the published maps go through :mod:`.regrid`, window by window."""
        return _nearest(values, (self.raster.height, self.raster.width)) if self.scaled else values

    def to_model_array(self, values: np.ndarray) -> np.ndarray:
        """A raster-grid array (H × W, in memory) on this grid: the raster pixel under each model
        pixel's centre (labels for a simulated annotator who sees the resampled map)."""
        return _nearest(values, (self.info.height, self.info.width)) if self.scaled else values

    def describe(self) -> dict[str, float | int]:
        return {"width": self.info.width, "height": self.info.height, "factor": round(self.factor, 6)}


def pixel_size_m(info: RasterInfo) -> float | None:
    """The raster's pixel size in metres (the mean of its two sides), from its CRS; None without one."""
    if info.crs is None or not info.georeferenced:
        return None
    side = (abs(info.transform.a) + abs(info.transform.e)) / 2
    if info.crs.is_geographic:
        latitude = (info.transform * (info.width / 2, info.height / 2))[1]
        return side * METRES_PER_DEGREE * math.sqrt(abs(math.cos(math.radians(latitude))))
    try:
        _, factor = info.crs.linear_units_factor
    except Exception:  # a CRS with no linear unit: trust the numbers as metres
        factor = 1.0
    return side * factor


def model_grid(
    info: RasterInfo,
    gsd_m: float | None,
    pixel_size: float | None = None,
    gsd_range: tuple[float, float] | None = None,
) -> ModelGrid:
    """Where the network reads ``info``'s raster, given its pixel size (``pixel_size``, given by the
    user, else from the CRS): as it is when unknown, within ``gsd_range`` (the pixel sizes the
    training covered) or within :data:`TOLERANCE` of the target; otherwise resampled to the target,
    the nearer end of ``gsd_range`` or, without one, ``gsd_m``."""
    if pixel_size is not None and not (
        isinstance(pixel_size, int | float) and math.isfinite(pixel_size) and pixel_size > 0
    ):
        raise UserError(f"the pixel size must be a positive number of metres, not {pixel_size}")
    size = pixel_size or pixel_size_m(info)
    target = gsd_m if gsd_range is None or size is None else min(max(size, gsd_range[0]), gsd_range[1])
    if target is None or size is None or abs(math.log(size / target)) <= math.log1p(TOLERANCE):
        return ModelGrid(info, info, 1.0, size)
    factor = size / target
    width, height = max(1, round(info.width * factor)), max(1, round(info.height * factor))
    scale = Affine.scale(info.width / width, info.height / height)  # edges meet the raster's exactly
    trained = f"{gsd_m:g} m" if gsd_range is None else f"{gsd_range[0]:g}–{gsd_range[1]:g} m"
    notice = (
        f"{info.path.name} has {size:.3g}-m pixels and the model was trained at {trained}: it is "
        f"read resampled to {width} × {height} px of {target:g} m, and the maps are written back on "
        "its own grid"
    )
    model = replace(
        info,
        width=width,
        height=height,
        transform=info.transform * scale,
        grid_scale=(info.grid_scale[0] * info.width / width, info.grid_scale[1] * info.height / height),
        notices=(*info.notices, notice),
    )
    return ModelGrid(info, model, factor, size)


def _centres(size: int, source: int) -> np.ndarray:
    """For each of ``size`` cells spanning the same extent as ``source`` cells, the source cell
    under its centre."""
    return np.minimum(((np.arange(size) + 0.5) * (source / size)).astype(np.int64), source - 1)


def _nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` (H × W) on a grid of ``shape`` over the same extent, nearest neighbour."""
    return values[np.ix_(_centres(shape[0], values.shape[0]), _centres(shape[1], values.shape[1]))]
