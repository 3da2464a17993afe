"""The rasters the benchmarks run on, built from the shared Dubai tile 8 and cached.

Large scenes are made by mirroring: a 6000² scene is a 6000 × 4438 crop of tile 8 with rows
mirrored down to 6000; a 12000² scene mirrors the 6000² one in both directions. They are written
one strip of blocks at a time (tiled 512, JPEG like the source, with its internal mask) so that
building a scene never needs the scene's size in memory. Without the shared data, the generated
sample scene stands in (said in the output).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from backend.demo.scene import write_scene
from backend.errors import UserError

from . import OUT, REPOSITORY
from .report import status

SHARED_DATA = REPOSITORY.parent / "shared" / "data"
TILE_8 = SHARED_DATA / "dubai" / "tile_8_image.tif"
SCENES = OUT / "scenes"
BASE_SIZE = 6000
"""Scenes larger than this mirror the 6000² scene; smaller ones come from the source directly."""
BLOCK = 512
SAMPLE_SIZE = 1536
"""Side of the generated sample scene that larger fallback scenes mirror."""
BUILD_CACHE_MB = 128
"""GDAL block cache while building (its default, 5 % of RAM, would dwarf a strip)."""


@dataclass(frozen=True)
class Scene:
    path: Path
    description: str


def shared_data_available() -> bool:
    return TILE_8.is_file()


def given_raster(path: Path) -> Scene:
    if not path.is_file():
        raise UserError(f"raster not found: {path}")
    return Scene(path, f"{path} (given with --raster)")


def crop_scene(size: int) -> Scene:
    """A size² crop of tile 8 (mirrored where tile 8 is smaller), else the sample scene of that size."""
    if shared_data_available():
        return square_scene(size)
    directory = SCENES / f"sample-{size}"
    path = directory / "sample_image.tif"
    if not path.is_file():
        status(f"drawing the {size}² sample scene into {directory}")
        write_scene(directory, size)
    return Scene(path, f"generated sample scene {size}² ({TILE_8} is absent), {path}")


def square_scene(size: int, build: bool = True) -> Scene:
    """A size² scene mirrored from tile 8 (or from the sample scene without the shared data)."""
    if shared_data_available():
        source, origin, prefix = TILE_8, "Dubai tile 8", "tile8"
    else:
        source = SCENES / f"sample-{SAMPLE_SIZE}" / "sample_image.tif"
        origin, prefix = f"the generated {SAMPLE_SIZE}² sample scene ({TILE_8} is absent)", "sample"
        if not source.is_file() and build:
            status(f"drawing the {SAMPLE_SIZE}² sample scene")
            write_scene(source.parent, SAMPLE_SIZE)
    if size > BASE_SIZE:
        source = square_scene(BASE_SIZE, build).path
        origin = f"the {BASE_SIZE}² scene from {origin}"
    target = SCENES / f"{prefix}-{size}.tif"
    if not target.is_file():
        if not build:
            raise UserError(f"{target} is missing: run without --skip-build once to build it")
        status(f"building {target.name} from {source}")
        write_mirrored(source, target, size)
    return Scene(target, f"{size}² {_how(source, size)} {origin}, {target}")


def _how(source: Path, size: int) -> str:
    if source.is_file():
        with rasterio.open(source) as src:
            if size <= min(src.width, src.height):
                return "top-left crop of"
    return "mirrored from"


def reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Indices past ``length`` folded back like a mirror (0 … n-1, n-1 … 0, 0 …)."""
    folded = index % (2 * length)
    return np.where(folded < length, folded, 2 * length - 1 - folded)


def write_mirrored(source: Path, target: Path, size: int) -> None:
    """Write ``target`` (size × size) from ``source``, one strip of blocks at a time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(source) as src:
            profile = _profile(src, size)
            cols = reflect(np.arange(size), src.width)
            with (
                rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=BUILD_CACHE_MB),
                rasterio.open(partial, "w", **profile) as dst,
            ):
                for row0 in range(0, size, BLOCK):
                    rows = reflect(np.arange(row0, min(row0 + BLOCK, size)), src.height)
                    low, high = int(rows.min()), int(rows.max()) + 1
                    window = Window(0, low, src.width, high - low)
                    data = src.read(window=window)[:, rows - low][:, :, cols]
                    mask = src.dataset_mask(window=window)[rows - low][:, cols]
                    out = Window(0, row0, size, len(rows))
                    dst.write(data, window=out)
                    dst.write_mask(mask, window=out)
    os.replace(partial, target)


def _profile(src: rasterio.io.DatasetReader, size: int) -> dict:
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": src.count,
        "dtype": src.dtypes[0],
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    if src.count == 3 and src.dtypes[0] == "uint8":
        profile.update(compress="jpeg", photometric="ycbcr", jpeg_quality=92, interleave="pixel")
    else:
        profile.update(compress="deflate")
    if src.crs is not None or not src.transform.is_identity:
        profile.update(crs=src.crs, transform=src.transform)
    return profile
